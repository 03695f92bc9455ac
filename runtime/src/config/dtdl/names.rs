//! DTDL identifiers and names: what a DTMI and an element name may be, how a twin type
//! is named after its Interface and back, and which command sets a desired value.

/// Longest DTMI of an Interface.
pub(super) const MAX_INTERFACE_ID: usize = 128;
/// Longest user DTMI.
const MAX_USER_DTMI: usize = 2048;
/// Longest name of a DTDL element.
const MAX_NAME: usize = 512;

/// A checked DTMI, split into its path segments and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dtmi {
    /// The path segments, `["com", "example", "Thermostat"]`.
    pub segments: Vec<String>,
    /// The version, `1` or `2.5`, when given.
    pub version: Option<String>,
}

impl Dtmi {
    /// Checks `id` against the DTMI rules for model documents (user DTMIs only).
    pub fn parse(id: &str) -> Result<Self, String> {
        if id.len() > MAX_USER_DTMI {
            return Err(format!("it is longer than {MAX_USER_DTMI} characters"));
        }
        let Some(rest) = id.strip_prefix("dtmi:") else {
            return Err("it does not start with `dtmi:`".to_string());
        };
        let (path, version) = match rest.split_once(';') {
            Some((path, version)) => (path, Some(version)),
            None => (rest, None),
        };
        let mut segments = Vec::new();
        for segment in path.split(':') {
            check_segment(segment)?;
            segments.push(segment.to_string());
        }
        if let Some(version) = version {
            check_version(version)?;
        }
        Ok(Self {
            segments,
            version: version.map(str::to_string),
        })
    }

    /// The twin type name at `level` of qualification: 0 the last segment, 1 the whole
    /// path, 2 the whole path and the version; in snake case.
    pub fn type_name(&self, level: u8) -> String {
        let mut name = if level == 0 {
            self.segments
                .last()
                .map(|s| snake_case(s))
                .unwrap_or_default()
        } else {
            self.segments
                .iter()
                .map(|s| snake_case(s))
                .collect::<Vec<_>>()
                .join("_")
        };
        if level >= 2
            && let Some(version) = &self.version
        {
            name.push_str("_v");
            name.push_str(&version.replace('.', "_"));
        }
        name
    }
}

/// Whether `name` is a DTDL element name: ASCII letters, digits and `_`, starting with a
/// letter, not ending with `_`, at most 512 characters.
pub(super) fn is_dtdl_name(name: &str) -> bool {
    name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && !name.ends_with('_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What a DTDL name must look like, for error messages and reports.
pub(super) const NAME_RULE: &str =
    "letters, digits and `_`, starting with a letter and not ending with `_`";

/// Snake case of a DTMI segment: `TemperatureController` → `temperature_controller`,
/// `HVACUnit` → `hvac_unit`; a snake-case segment stays as it is.
pub(super) fn snake_case(segment: &str) -> String {
    let chars: Vec<char> = segment.chars().collect();
    let mut out = String::with_capacity(segment.len() + 4);
    for (index, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let previous = index.checked_sub(1).map(|i| chars[i]);
            let next = chars.get(index + 1).copied();
            let starts_word = match previous {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if starts_word {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The DTMI segment a twin type is exported under: its name, with every character a
/// segment cannot hold made `_`, a leading `t` where it would not start with a letter,
/// and no trailing `_`.
pub(super) fn dtmi_segment(type_name: &str) -> String {
    let mut segment: String = type_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !segment.starts_with(|c: char| c.is_ascii_alphabetic()) {
        segment.insert(0, 't');
    }
    while segment.ends_with('_') {
        segment.pop();
    }
    segment
}

/// The command an import adds to set desired value `name` (unprefixed): `set_speed`,
/// or `setTargetTemperature` for a camel-case name.
pub(super) fn setter_name(name: &str) -> String {
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        format!("set{}", capitalized(name))
    } else {
        format!("set_{name}")
    }
}

/// Whether `command` is named as the setter of desired value `desired`: `set_` or
/// `set` and a capital inserted before the whole name or before any part of it after
/// a `_` (`thermostat1_setTargetTemperature` sets `thermostat1_targetTemperature`).
pub(super) fn is_setter_of(command: &str, desired: &str) -> bool {
    let starts = std::iter::once(0).chain(desired.match_indices('_').map(|(at, _)| at + 1));
    for at in starts {
        let (prefix, rest) = desired.split_at(at);
        if rest.is_empty() {
            continue;
        }
        let Some(tail) = command
            .strip_prefix(prefix)
            .and_then(|c| c.strip_prefix("set"))
        else {
            continue;
        };
        if tail.strip_prefix('_') == Some(rest) || tail == capitalized(rest) {
            return true;
        }
    }
    false
}

/// `name` with its first letter in upper case.
fn capitalized(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("{}{}", first.to_ascii_uppercase(), chars.as_str()),
        None => String::new(),
    }
}

fn check_segment(segment: &str) -> Result<(), String> {
    if segment.is_empty() {
        return Err("a path segment is empty".to_string());
    }
    if !segment
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "segment `{segment}` holds characters other than letters, digits and `_`"
        ));
    }
    if segment.starts_with('_') {
        return Err(format!(
            "segment `{segment}` starts with `_`: system DTMIs are not allowed in models"
        ));
    }
    if segment.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(format!("segment `{segment}` starts with a digit"));
    }
    if segment.ends_with('_') {
        return Err(format!("segment `{segment}` ends with `_`"));
    }
    Ok(())
}

fn check_version(version: &str) -> Result<(), String> {
    let (major, minor) = match version.split_once('.') {
        Some((major, minor)) => (major, Some(minor)),
        None => (version, None),
    };
    let number = |part: &str, digits: usize| {
        !part.is_empty()
            && part.len() <= digits
            && part.bytes().all(|b| b.is_ascii_digit())
            && !part.starts_with('0')
    };
    if number(major, 9) && minor.is_none_or(|minor| number(minor, 6)) {
        Ok(())
    } else {
        Err(format!(
            "version `{version}` is not a number of 1 to 9 digits, or two such numbers \
             joined by `.` (the second of 1 to 6 digits), without leading zeros"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtmis_follow_the_specification() {
        let dtmi = Dtmi::parse("dtmi:com:example:Thermostat;1").unwrap();
        assert_eq!(dtmi.segments, ["com", "example", "Thermostat"]);
        assert_eq!(dtmi.version.as_deref(), Some("1"));
        assert!(Dtmi::parse("dtmi:com:example:Thermostat").is_ok());
        assert!(Dtmi::parse("dtmi:com:example:Thermostat;2.5").is_ok());
        for bad in [
            "com:example:Thermostat;1",
            "dtmi:com::Thermostat;1",
            "dtmi:com:example:Thermo-stat;1",
            "dtmi:foo_bar:_16:baz33:qux;12",
            "dtmi:com:2example;1",
            "dtmi:com:example_;1",
            "dtmi:com:example;01",
            "dtmi:com:example;1.0",
            "dtmi:com:example;1234567890",
            "dtmi:com:example;1;2",
            "dtmi:com:example;",
        ] {
            assert!(Dtmi::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn type_names_are_snake_case_and_qualify_on_demand() {
        let dtmi = Dtmi::parse("dtmi:com:example:TemperatureController;2.1").unwrap();
        assert_eq!(dtmi.type_name(0), "temperature_controller");
        assert_eq!(dtmi.type_name(1), "com_example_temperature_controller");
        assert_eq!(dtmi.type_name(2), "com_example_temperature_controller_v2_1");
        assert_eq!(snake_case("HVACUnit"), "hvac_unit");
        assert_eq!(snake_case("airQualitySensor2"), "air_quality_sensor2");
        assert_eq!(snake_case("press_v2"), "press_v2");
        assert_eq!(snake_case(&dtmi_segment("press-2")), "press_2");
        assert_eq!(dtmi_segment("press"), "press");
        assert_eq!(dtmi_segment("2nd_press_"), "t2nd_press");
    }

    #[test]
    fn names_follow_the_specification() {
        for good in ["temp", "setPointTemp", "thermostat1_temperature", "a"] {
            assert!(is_dtdl_name(good), "{good}");
        }
        for bad in ["", "1temp", "_temp", "temp_", "temp-1", "température"] {
            assert!(!is_dtdl_name(bad), "{bad}");
        }
        assert!(!is_dtdl_name(&"a".repeat(513)));
    }

    #[test]
    fn setters_are_named_after_what_they_set() {
        assert_eq!(setter_name("speed"), "set_speed");
        assert_eq!(setter_name("targetTemperature"), "setTargetTemperature");
        assert!(is_setter_of("set_speed", "speed"));
        assert!(is_setter_of("setSpeed", "speed"));
        assert!(is_setter_of("setTargetTemperature", "targetTemperature"));
        assert!(is_setter_of(
            "thermostat1_setTargetTemperature",
            "thermostat1_targetTemperature"
        ));
        assert!(is_setter_of(
            "set_thermostat1_targetTemperature",
            "thermostat1_targetTemperature"
        ));
        assert!(!is_setter_of("set_speed", "speed_limit"));
        assert!(!is_setter_of("reset_speed", "speed"));
        assert!(!is_setter_of("set", "speed"));
    }
}
