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

/// A typed value. Human-readable formats (TOML, JSON) write it bare (`true`, `3`,
/// `2.5`); binary formats tag the variant.
#[derive(Debug, Clone, Copy, PartialEq)]
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
            _ => raw.parse::<i64>().map(Value::Int).ok().or_else(|| {
                raw.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
                    .map(Value::Float)
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Bare {
    Bool(bool),
    Int(i64),
    Float(f64),
}

#[derive(Serialize, Deserialize)]
enum Tagged {
    Bool(bool),
    Int(i64),
    Float(f64),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            match *self {
                Value::Bool(b) => Bare::Bool(b),
                Value::Int(i) => Bare::Int(i),
                Value::Float(f) => Bare::Float(f),
            }
            .serialize(serializer)
        } else {
            match *self {
                Value::Bool(b) => Tagged::Bool(b),
                Value::Int(i) => Tagged::Int(i),
                Value::Float(f) => Tagged::Float(f),
            }
            .serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(match Bare::deserialize(deserializer)? {
                Bare::Bool(b) => Value::Bool(b),
                Bare::Int(i) => Value::Int(i),
                Bare::Float(f) => Value::Float(f),
            })
        } else {
            Ok(match Tagged::deserialize(deserializer)? {
                Tagged::Bool(b) => Value::Bool(b),
                Tagged::Int(i) => Value::Int(i),
                Tagged::Float(f) => Value::Float(f),
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_in_text_tagged_in_binary() {
        assert_eq!(serde_json::to_string(&Value::Int(3)).unwrap(), "3");
        assert_eq!(
            serde_json::from_str::<Value>("2.5").unwrap(),
            Value::Float(2.5)
        );
        for value in [Value::Bool(true), Value::Int(-7), Value::Float(1.25)] {
            let bytes = postcard::to_stdvec(&value).unwrap();
            assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), value);
        }
    }
}
