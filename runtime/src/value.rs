//! Typed values of desired state and command parameters.

use serde::{Deserialize, Serialize};

/// The type of a desired value or command parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueKind {
    /// A 64-bit float.
    Float,
    /// A 64-bit signed integer.
    Int,
    /// A boolean.
    Bool,
}

/// A typed value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
}

impl Value {
    /// The value's kind.
    pub fn kind(&self) -> ValueKind {
        match self {
            Value::Bool(_) => ValueKind::Bool,
            Value::Int(_) => ValueKind::Int,
            Value::Float(_) => ValueKind::Float,
        }
    }

    /// The value as a float (`true` is 1.0).
    pub fn as_f64(&self) -> f64 {
        match *self {
            Value::Bool(b) => f64::from(u8::from(b)),
            Value::Int(i) => i as f64,
            Value::Float(f) => f,
        }
    }

    /// The value as a boolean, if it is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// Converts `self` to `kind` when that loses nothing (an integer to a float, a
    /// whole float to an integer); `None` otherwise.
    pub fn coerce(&self, kind: ValueKind) -> Option<Value> {
        match (*self, kind) {
            (v, k) if v.kind() == k => Some(v),
            (Value::Int(i), ValueKind::Float) => Some(Value::Float(i as f64)),
            (Value::Float(f), ValueKind::Int) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                Some(Value::Int(f as i64))
            }
            _ => None,
        }
    }

    /// Builds a value of `kind` from a float (rounding for integers).
    pub fn from_f64(kind: ValueKind, value: f64) -> Value {
        match kind {
            ValueKind::Float => Value::Float(value),
            ValueKind::Int => Value::Int(value.round() as i64),
            ValueKind::Bool => Value::Bool(value != 0.0),
        }
    }

    /// Parses the text form used on command lines: `true`, `false`, an integer or a float.
    pub fn parse(raw: &str) -> Option<Value> {
        match raw {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => raw
                .parse::<i64>()
                .map(Value::Int)
                .ok()
                .or_else(|| raw.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::Float)),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
        }
    }
}
