//! Commands, their origin and the verdict governors reach.

use serde::{Deserialize, Serialize};

use crate::path::AssetPath;
use crate::time::Timestamp;
use crate::value::Value;

/// Identifies a command end to end (logs, audit, replies).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommandId(pub String);

impl CommandId {
    /// A new random identifier.
    pub fn random() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let now = Timestamp::now().as_micros() as u64;
        let mixed =
            (now ^ (count.wrapping_mul(0x9E37_79B9_7F4A_7C15))).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Self(format!("{:016x}{:04x}", mixed, count & 0xffff))
    }
}

impl std::fmt::Display for CommandId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who asked for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginKind {
    /// A person at a console or tool.
    Operator,
    /// A fleet planner.
    Planner,
    /// An automatic controller or integration (MES, scripts).
    Automation,
    /// A governor's safety action.
    Safety,
    /// The runtime itself.
    System,
}

impl OriginKind {
    /// True for origins that act without a person deciding (planner, automation).
    pub fn is_automatic(self) -> bool {
        matches!(self, OriginKind::Planner | OriginKind::Automation)
    }
}

/// The origin of a command: what kind of actor asked, and its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The kind of requester.
    pub kind: OriginKind,
    /// Its identity (user name, planner name, governor name).
    pub principal: String,
}

impl Origin {
    /// An operator named `principal`.
    pub fn operator(principal: impl Into<String>) -> Self {
        Self {
            kind: OriginKind::Operator,
            principal: principal.into(),
        }
    }

    /// An automatic controller named `principal`.
    pub fn automation(principal: impl Into<String>) -> Self {
        Self {
            kind: OriginKind::Automation,
            principal: principal.into(),
        }
    }

    /// A planner named `principal`.
    pub fn planner(principal: impl Into<String>) -> Self {
        Self {
            kind: OriginKind::Planner,
            principal: principal.into(),
        }
    }
}

/// A request to change a twin's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Identifier, unique per command.
    pub id: CommandId,
    /// The twin it addresses.
    pub asset: AssetPath,
    /// Command name, as declared in the twin type.
    pub name: String,
    /// Parameters by name.
    pub params: Vec<(String, Value)>,
    /// Who asked.
    pub origin: Origin,
    /// When it was issued.
    pub issued_at: Timestamp,
    /// After this instant the command must not be actuated.
    pub deadline: Option<Timestamp>,
    /// The id is the caller's idempotency key: a twin that has seen it returns the
    /// first outcome again and actuates nothing, also after a restart.
    #[serde(default)]
    pub idempotent: bool,
}

impl Command {
    /// A command with a fresh id, issued now, without deadline.
    pub fn new(asset: AssetPath, name: impl Into<String>, origin: Origin) -> Self {
        Self {
            id: CommandId::random(),
            asset,
            name: name.into(),
            params: Vec::new(),
            origin,
            issued_at: Timestamp::now(),
            deadline: None,
            idempotent: false,
        }
    }

    /// Makes retries safe: the command's id becomes `key`, and a twin that has seen a
    /// command with this id returns that command's outcome instead of applying it
    /// again.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.id = CommandId(key.into());
        self.idempotent = true;
        self
    }

    /// Adds a parameter.
    pub fn param(mut self, name: impl Into<String>, value: Value) -> Self {
        self.params.push((name.into(), value));
        self
    }

    /// Sets a deadline.
    pub fn deadline(mut self, deadline: Timestamp) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<Value> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// One desired value a command writes, as requested and as a governor left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredChange {
    /// Index of the desired value in the twin type.
    pub index: u16,
    /// Its name.
    pub name: String,
    /// The value the command asked for.
    pub requested: Value,
    /// The value that will be applied (differs from `requested` when clamped).
    pub value: Value,
}

/// A clamp a governor applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clamp {
    /// The desired value that was clamped.
    pub desired: String,
    /// What was asked.
    pub requested: Value,
    /// What will be applied.
    pub applied: Value,
    /// The governor that clamped it.
    pub governor: String,
    /// Why.
    pub reason: String,
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Applied as asked.
    Accepted,
    /// Applied with some values changed by governors.
    Clamped {
        /// Every clamp, in governor order.
        clamps: Vec<Clamp>,
    },
    /// Not applied.
    Denied {
        /// The governor that denied it.
        governor: String,
        /// Its reason.
        reason: String,
    },
}

impl Verdict {
    /// True unless denied.
    pub fn is_applied(&self) -> bool {
        !matches!(self, Verdict::Denied { .. })
    }

    /// A short lowercase name (`accepted`, `clamped`, `denied`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Clamped { .. } => "clamped",
            Verdict::Denied { .. } => "denied",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Accepted => f.write_str("accepted"),
            Verdict::Clamped { clamps } => {
                f.write_str("clamped")?;
                for clamp in clamps {
                    write!(
                        f,
                        " {}={}→{} ({}: {})",
                        clamp.desired, clamp.requested, clamp.applied, clamp.governor, clamp.reason
                    )?;
                }
                Ok(())
            }
            Verdict::Denied { governor, reason } => write!(f, "denied by {governor}: {reason}"),
        }
    }
}
