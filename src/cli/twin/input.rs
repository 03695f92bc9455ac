//! What a person types on the command line, checked and turned into request fields:
//! `NAME=VALUE` parameters, durations such as `90s` or `1h30m`, RFC 3339 times and
//! time ranges. Every check fails with a [`Failure::usage`] naming the bad input.

use std::time::Duration;

use doppel::kernel::Timestamp;
use doppel::proto::v1::{NamedValue, Value, value};

use super::failure::Failure;

/// Longest duration accepted anywhere (a century): beyond it, arithmetic on times
/// stops making sense.
const MAX_DURATION_SECS: f64 = 100.0 * 365.0 * 86_400.0;

/// Parses a command parameter `NAME=VALUE`; the value is `true`, `false`, an integer
/// or a float (`rpm=1200`, `ratio=0.5`, `enabled=true`).
pub fn parse_param(text: &str) -> Result<NamedValue, Failure> {
    let Some((name, raw)) = text.split_once('=') else {
        return Err(Failure::usage(format!(
            "bad parameter `{text}`: expected NAME=VALUE, e.g. rpm=1200"
        )));
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(Failure::usage(format!(
            "bad parameter `{text}`: the name before `=` is empty"
        )));
    }
    let Some(parsed) = doppel::kernel::Value::parse(raw.trim()) else {
        return Err(Failure::usage(format!(
            "bad parameter `{text}`: `{raw}` is not true, false, an integer or a number"
        )));
    };
    let kind = match parsed {
        doppel::kernel::Value::Bool(b) => value::Kind::BoolValue(b),
        doppel::kernel::Value::Int(i) => value::Kind::IntValue(i),
        doppel::kernel::Value::Float(f) => value::Kind::FloatValue(f),
    };
    Ok(NamedValue {
        name: name.to_string(),
        value: Some(Value { kind: Some(kind) }),
    })
}

/// Parses every `NAME=VALUE` parameter, refusing a name given twice.
pub fn parse_params(texts: &[String]) -> Result<Vec<NamedValue>, Failure> {
    let mut params: Vec<NamedValue> = Vec::with_capacity(texts.len());
    for text in texts {
        let param = parse_param(text)?;
        if params.iter().any(|p| p.name == param.name) {
            return Err(Failure::usage(format!(
                "bad parameter `{text}`: `{}` is given twice",
                param.name
            )));
        }
        params.push(param);
    }
    Ok(params)
}

/// Parses a duration: a number with a unit (`500ms`, `90s`, `10m`, `1h`, `2d`,
/// `1.5h`), several of them in a row (`1h30m`), or a bare number of seconds (`30`).
/// `flag` names the option in the error.
pub fn parse_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    let bad =
        |why: &str| Failure::usage(format!("{flag} `{text}`: {why} (e.g. 90s, 10m, 1h30m, 2d)"));
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(bad("empty duration"));
    }
    let mut total_secs = 0.0f64;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad("expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| bad("expected a number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_secs = match &rest[..unit_len] {
            "" if number_len == trimmed.len() => 1.0,
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            "" => return Err(bad("a number without a unit")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        total_secs += number * unit_secs;
    }
    if !total_secs.is_finite() || total_secs > MAX_DURATION_SECS {
        return Err(bad("too long"));
    }
    Ok(Duration::from_secs_f64(total_secs))
}

/// Parses a positive duration (a timeout, a horizon, a step).
pub fn parse_positive_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    let duration = parse_duration(flag, text)?;
    if duration.is_zero() {
        return Err(Failure::usage(format!(
            "{flag} `{text}`: must be more than 0"
        )));
    }
    Ok(duration)
}

/// Parses an RFC 3339 time (`2026-11-21T10:00:00Z`, `2026-11-21T11:00:00.5+01:00`).
pub fn parse_time(flag: &str, text: &str) -> Result<Timestamp, Failure> {
    Timestamp::parse_rfc3339(text.trim()).ok_or_else(|| {
        Failure::usage(format!(
            "{flag} `{text}`: not an RFC 3339 time such as 2026-11-21T10:00:00Z"
        ))
    })
}

/// A time range, either end open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeRange {
    /// Start (inclusive); `None`: the beginning.
    pub from: Option<Timestamp>,
    /// End (inclusive); `None`: now.
    pub to: Option<Timestamp>,
}

impl TimeRange {
    /// The range given by `--since D` (from `now - D`) or `--from T`, and `--to T`.
    /// Clap keeps `--since` and `--from` apart; the start must not lie after the end.
    pub fn from_flags(
        since: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        now: Timestamp,
    ) -> Result<Self, Failure> {
        let from = match (since, from) {
            (Some(since), _) => Some(now.minus(parse_duration("--since", since)?)),
            (None, Some(from)) => Some(parse_time("--from", from)?),
            (None, None) => None,
        };
        let to = to.map(|to| parse_time("--to", to)).transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(Failure::usage(format!(
                "the range starts at {} and ends before, at {}",
                from.to_rfc3339(),
                to.to_rfc3339()
            )));
        }
        Ok(Self { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::twin::failure::EXIT_USAGE;

    fn kind(param: &NamedValue) -> value::Kind {
        param.value.unwrap().kind.unwrap()
    }

    #[test]
    fn parameters_parse_as_bool_integer_or_float() {
        let rpm = parse_param("rpm=1200").unwrap();
        assert_eq!(rpm.name, "rpm");
        assert_eq!(kind(&rpm), value::Kind::IntValue(1200));
        assert_eq!(
            kind(&parse_param("ratio=0.5").unwrap()),
            value::Kind::FloatValue(0.5)
        );
        assert_eq!(
            kind(&parse_param("offset=-3").unwrap()),
            value::Kind::IntValue(-3)
        );
        assert_eq!(
            kind(&parse_param("big=1e3").unwrap()),
            value::Kind::FloatValue(1000.0)
        );
        assert_eq!(
            kind(&parse_param("on=true").unwrap()),
            value::Kind::BoolValue(true)
        );
        assert_eq!(
            kind(&parse_param("on=false").unwrap()),
            value::Kind::BoolValue(false)
        );
    }

    #[test]
    fn bad_parameters_are_usage_errors() {
        for (text, says) in [
            ("rpm", "expected NAME=VALUE"),
            ("=5", "name before `=` is empty"),
            ("rpm=", "is not true, false"),
            ("rpm=fast", "`fast` is not true, false"),
            ("rpm=NaN", "is not true, false"),
            ("rpm=inf", "is not true, false"),
            ("on=True", "is not true, false"),
        ] {
            let failure = parse_param(text).unwrap_err();
            assert_eq!(failure.exit_code(), EXIT_USAGE, "{text}");
            assert!(failure.to_string().contains(says), "{text}: {failure}");
            assert!(failure.to_string().contains(text), "{text}: {failure}");
        }
        let twice = parse_params(&["rpm=1".into(), "rpm=2".into()]).unwrap_err();
        assert!(twice.to_string().contains("given twice"), "{twice}");
        assert_eq!(
            parse_params(&["a=1".into(), "b=x=2".into()])
                .unwrap_err()
                .exit_code(),
            EXIT_USAGE
        );
    }

    #[test]
    fn durations_take_units_and_compounds() {
        let secs = |text| parse_duration("--since", text).unwrap().as_secs_f64();
        assert_eq!(secs("90s"), 90.0);
        assert_eq!(secs("10m"), 600.0);
        assert_eq!(secs("1h"), 3600.0);
        assert_eq!(secs("2d"), 172_800.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs("250ms"), 0.25);
        assert_eq!(secs("30"), 30.0);
        assert_eq!(secs(" 45s "), 45.0);
        assert_eq!(secs("0s"), 0.0);
    }

    #[test]
    fn bad_durations_are_usage_errors() {
        for text in [
            "",
            "s",
            "10x",
            "1h30",
            "-5m",
            "5 m",
            "1..5s",
            "ten",
            "1e3s",
            "99999999999d",
        ] {
            let failure = parse_duration("--horizon", text).unwrap_err();
            assert_eq!(failure.exit_code(), EXIT_USAGE, "{text:?}");
            assert!(
                failure.to_string().starts_with("--horizon `"),
                "{text:?}: {failure}"
            );
        }
        assert!(parse_positive_duration("--step", "0s").is_err());
        assert_eq!(
            parse_positive_duration("--step", "10s").unwrap(),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn time_ranges_from_since_or_from_and_to() {
        let now = Timestamp::parse_rfc3339("2026-11-21T12:00:00Z").unwrap();
        let range = TimeRange::from_flags(Some("1h"), None, None, now).unwrap();
        assert_eq!(range.from, Timestamp::parse_rfc3339("2026-11-21T11:00:00Z"));
        assert_eq!(range.to, None);

        let range = TimeRange::from_flags(
            None,
            Some("2026-11-21T10:00:00Z"),
            Some("2026-11-21T11:00:00+01:00"),
            now,
        )
        .unwrap();
        assert_eq!(range.from, Timestamp::parse_rfc3339("2026-11-21T10:00:00Z"));
        assert_eq!(range.to, Timestamp::parse_rfc3339("2026-11-21T10:00:00Z"));

        assert_eq!(
            TimeRange::from_flags(None, None, None, now).unwrap(),
            TimeRange::default()
        );
        let backwards = TimeRange::from_flags(
            None,
            Some("2026-11-21T11:00:00Z"),
            Some("2026-11-21T10:00:00Z"),
            now,
        )
        .unwrap_err();
        assert_eq!(backwards.exit_code(), EXIT_USAGE);
        let bad = TimeRange::from_flags(None, Some("yesterday"), None, now).unwrap_err();
        assert!(bad.to_string().starts_with("--from `yesterday`"), "{bad}");
    }
}
