//! The audit log: every command, verdict and safety action, with what informed it.

use serde::{Deserialize, Serialize};

use crate::command::{CommandId, Origin, Verdict};
use crate::path::AssetPath;
use crate::time::Timestamp;
use crate::value::Value;

/// A model that informed a decision, as it stood then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// Its confidence at the time, 0..=1.
    pub confidence: f64,
}

/// What an audit record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A command and the governors' verdict on it.
    Command,
    /// A safety action a governor took on its own.
    SafetyAction,
    /// An actuator confirmed that desired values reached the machine.
    Delivered,
    /// Desired values did not reach the machine (refused, past their deadline, or not
    /// confirmed in time).
    DeliveryFailed,
    /// Someone responded to an alarm: acknowledged, shelved, unshelved, took it out of
    /// service or returned it (`command` names the response, `reason` the alarm).
    AlarmResponse,
    /// A model was deployed to the twin: put in production in place of another
    /// version, started or stopped as a shadow (`command` says which, `models` the
    /// model, `reason` the versions and deployment).
    ModelDeployment,
    /// Someone annotated an alarm, a safety action or a recommendation with its
    /// outcome (see [`Annotation`]): `command` names the subject, `reason` the outcome
    /// and note, `models` the models concerned, `requested` a recommendation's
    /// parameters.
    Annotation,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Node-wide sequence number, assigned when the record is journaled.
    pub seq: u64,
    /// When the decision was taken.
    pub at: Timestamp,
    /// The twin concerned.
    pub asset: AssetPath,
    /// Command or safety action.
    pub kind: AuditKind,
    /// The command's id.
    pub command_id: CommandId,
    /// The command's name.
    pub command: String,
    /// Its parameters as requested, before any governor reviewed them. Only the
    /// values in `applied` ever leave the twin.
    pub requested: Vec<(String, Value)>,
    /// Who asked (for safety actions: the governor).
    pub origin: Origin,
    /// The twin's state version the decision was based on.
    pub state_version: u64,
    /// Models that informed the decision, with version and confidence.
    pub models: Vec<ModelInfo>,
    /// The outcome.
    pub verdict: Verdict,
    /// Desired values written, after clamping (empty when denied).
    pub applied: Vec<(String, Value)>,
    /// Why (safety actions: the governor's reason).
    pub reason: String,
}

/// What an annotation is about.
#[derive(Debug, Clone, PartialEq)]
pub enum AnnotationSubject {
    /// An alarm in the twin's list, by code.
    Alarm(String),
    /// A safety action, by the sequence number of its audit record.
    SafetyAction(u64),
    /// A recommended command with its parameters, as Recommend returned it.
    Recommendation {
        /// The command's name.
        command: String,
        /// Its parameters.
        params: Vec<(String, Value)>,
    },
}

impl AnnotationSubject {
    /// `alarm`, `safety_action` or `recommendation`.
    pub fn word(&self) -> &'static str {
        match self {
            AnnotationSubject::Alarm(_) => "alarm",
            AnnotationSubject::SafetyAction(_) => "safety_action",
            AnnotationSubject::Recommendation { .. } => "recommendation",
        }
    }

    /// The alarm's code, the audit record's sequence number or the command's name.
    pub fn reference(&self) -> String {
        match self {
            AnnotationSubject::Alarm(code) => code.clone(),
            AnnotationSubject::SafetyAction(seq) => seq.to_string(),
            AnnotationSubject::Recommendation { command, .. } => command.clone(),
        }
    }
}

/// What an operator found the subject to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationOutcome {
    /// It was right: the alarm was real, the action needed, the recommendation good.
    Confirmed,
    /// It was wrong: a false alarm, an action that was not needed, a bad
    /// recommendation.
    FalseAlarm,
    /// Neither: a remark in the note.
    Comment,
}

impl AnnotationOutcome {
    /// `confirmed`, `false_alarm` or `comment`.
    pub fn word(self) -> &'static str {
        match self {
            AnnotationOutcome::Confirmed => "confirmed",
            AnnotationOutcome::FalseAlarm => "false_alarm",
            AnnotationOutcome::Comment => "comment",
        }
    }

    /// The outcome a word names.
    pub fn parse(word: &str) -> Option<Self> {
        match word {
            "confirmed" => Some(AnnotationOutcome::Confirmed),
            "false_alarm" => Some(AnnotationOutcome::FalseAlarm),
            "comment" => Some(AnnotationOutcome::Comment),
            _ => None,
        }
    }
}

/// An operator's annotation of an outcome: kept as an audit record of kind
/// [`AuditKind::Annotation`], so it is durable, replicated and listed with the rest,
/// and read back from one with [`Annotation::of`].
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// What it is about.
    pub subject: AnnotationSubject,
    /// What the operator found.
    pub outcome: AnnotationOutcome,
    /// Free text; may be empty unless the outcome is a comment.
    pub note: String,
}

impl Annotation {
    /// The audit record's `command`: the subject's word and reference.
    pub fn command(&self) -> String {
        format!("{}:{}", self.subject.word(), self.subject.reference())
    }

    /// The audit record's `reason`: the outcome's word, and the note after `: `.
    pub fn reason(&self) -> String {
        if self.note.is_empty() {
            self.outcome.word().to_string()
        } else {
            format!("{}: {}", self.outcome.word(), self.note)
        }
    }

    /// The annotation an audit record holds; `None` for other kinds.
    pub fn of(record: &AuditRecord) -> Option<Annotation> {
        if record.kind != AuditKind::Annotation {
            return None;
        }
        let (word, reference) = record.command.split_once(':')?;
        let subject = match word {
            "alarm" => AnnotationSubject::Alarm(reference.to_string()),
            "safety_action" => AnnotationSubject::SafetyAction(reference.parse().ok()?),
            "recommendation" => AnnotationSubject::Recommendation {
                command: reference.to_string(),
                params: record.requested.clone(),
            },
            _ => return None,
        };
        let (outcome, note) = match record.reason.split_once(": ") {
            Some((outcome, note)) => (outcome, note),
            None => (record.reason.as_str(), ""),
        };
        Some(Annotation {
            subject,
            outcome: AnnotationOutcome::parse(outcome)?,
            note: note.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_annotation_reads_back_from_its_audit_record() {
        let subjects = [
            AnnotationSubject::Alarm("anomaly:vibration".into()),
            AnnotationSubject::SafetyAction(42),
            AnnotationSubject::Recommendation {
                command: "set_speed".into(),
                params: vec![("rpm".into(), Value::Float(2100.0))],
            },
        ];
        for subject in subjects {
            for (outcome, note) in [
                (AnnotationOutcome::Confirmed, ""),
                (
                    AnnotationOutcome::FalseAlarm,
                    "sensor knocked: see ticket 7",
                ),
                (AnnotationOutcome::Comment, "a: b"),
            ] {
                let annotation = Annotation {
                    subject: subject.clone(),
                    outcome,
                    note: note.to_string(),
                };
                let params = match &subject {
                    AnnotationSubject::Recommendation { params, .. } => params.clone(),
                    _ => Vec::new(),
                };
                let record = AuditRecord {
                    seq: 1,
                    at: Timestamp(1),
                    asset: AssetPath::parse("acme/p/l/m").unwrap(),
                    kind: AuditKind::Annotation,
                    command_id: CommandId("c".into()),
                    command: annotation.command(),
                    requested: params,
                    origin: Origin::operator("ann"),
                    state_version: 1,
                    models: Vec::new(),
                    verdict: Verdict::Accepted,
                    applied: Vec::new(),
                    reason: annotation.reason(),
                };
                assert_eq!(Annotation::of(&record), Some(annotation));
            }
        }
    }
}
