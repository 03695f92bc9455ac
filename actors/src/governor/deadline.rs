//! `deadline`: refuses commands that arrive too late to act on.
//!
//! ```toml
//! [[types.press.governors]]
//! kind = "deadline"
//! max_age_secs = 30.0   # optional: also refuse commands issued longer ago than this
//! ```

use doppel_runtime::{ComponentSpec, ConfigError, Governor, Proposal, Review, TwinType, TwinView};
use serde::Deserialize;

use super::{number, positive, seconds};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadlineConfig {
    max_age_secs: Option<f64>,
}

/// Denies a command whose `deadline` is before the review time, and, when
/// `max_age_secs` is set, one issued longer ago than that (a command queued behind a
/// network partition should not move a machine minutes later).
#[derive(Debug, Clone)]
pub struct DeadlineGovernor {
    name: String,
    max_age_secs: Option<f64>,
}

impl DeadlineGovernor {
    /// The kind name used in configuration.
    pub const KIND: &'static str = "deadline";

    /// Builds the governor from its declaration.
    pub fn from_spec(spec: &ComponentSpec, _twin_type: &TwinType) -> Result<Self, ConfigError> {
        let config: DeadlineConfig = spec.params()?;
        let max_age_secs = config
            .max_age_secs
            .map(|age| positive(spec, "max_age_secs", age))
            .transpose()?;
        Ok(Self {
            name: spec.name.clone(),
            max_age_secs,
        })
    }
}

impl Governor for DeadlineGovernor {
    fn name(&self) -> &str {
        &self.name
    }

    fn review(&self, proposal: &mut Proposal<'_>, _twin: &TwinView<'_>) -> Review {
        let command = proposal.command;
        if let Some(deadline) = command.deadline
            && deadline < proposal.now
        {
            return Review::Deny(format!(
                "deadline passed {} ago",
                seconds(proposal.now.secs_since(deadline))
            ));
        }
        if let Some(max_age_secs) = self.max_age_secs {
            let age_secs = proposal.now.secs_since(command.issued_at);
            if age_secs > max_age_secs {
                return Review::Deny(format!(
                    "command issued {} ago, older than max age {} s",
                    seconds(age_secs),
                    number(max_age_secs)
                ));
            }
        }
        Review::Allow
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doppel_runtime::Timestamp;

    use super::*;
    use crate::governor::testing::{build_error, build_one, review, set_speed, state};

    #[test]
    fn denies_a_command_past_its_deadline() {
        let (twin_type, governor) = build_one("[[types.press.governors]]\nkind = \"deadline\"\n");
        let state = state(&twin_type);
        let now = Timestamp::now();

        let late = set_speed(1500.0).deadline(now.minus(Duration::from_millis(1200)));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &late,
            Vec::new(),
            false,
            now,
        );
        assert_eq!(outcome.denied(), "deadline passed 1.2 s ago");

        let in_time = set_speed(1500.0).deadline(now.plus(Duration::from_secs(1)));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &in_time,
            Vec::new(),
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);

        let at_deadline = set_speed(1500.0).deadline(now);
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &at_deadline,
            Vec::new(),
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);

        let mut old = set_speed(1500.0);
        old.issued_at = now.minus(Duration::from_secs(3600));
        let outcome = review(&*governor, &twin_type, &state, &old, Vec::new(), false, now);
        assert_eq!(outcome.review, Review::Allow, "no max age configured");
    }

    #[test]
    fn denies_a_command_older_than_max_age() {
        let (twin_type, governor) =
            build_one("[[types.press.governors]]\nkind = \"deadline\"\nmax_age_secs = 10\n");
        let state = state(&twin_type);
        let now = Timestamp::now();

        let mut old = set_speed(1500.0);
        old.issued_at = now.minus(Duration::from_millis(12_500));
        let outcome = review(&*governor, &twin_type, &state, &old, Vec::new(), false, now);
        assert_eq!(
            outcome.denied(),
            "command issued 12.5 s ago, older than max age 10 s"
        );

        let mut recent = set_speed(1500.0);
        recent.issued_at = now.minus(Duration::from_secs(9));
        let outcome = review(
            &*governor,
            &twin_type,
            &state,
            &recent,
            Vec::new(),
            false,
            now,
        );
        assert_eq!(outcome.review, Review::Allow);
    }

    #[test]
    fn config_errors_name_the_component() {
        let zero = build_error(
            "[[types.press.governors]]\nkind = \"deadline\"\nname = \"fresh\"\nmax_age_secs = 0\n",
        );
        assert!(
            zero.to_string()
                .contains("deadline `fresh`: `max_age_secs` must be a number above 0"),
            "{zero}"
        );
        let typo = build_error("[[types.press.governors]]\nkind = \"deadline\"\nmax_age = 5\n");
        assert!(
            typo.to_string()
                .contains("deadline `deadline`: unknown field `max_age`"),
            "{typo}"
        );
    }
}
