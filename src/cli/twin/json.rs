//! A small JSON value and its compact writer, for `--json` output.
//!
//! The CLI only ever writes JSON, never reads it, and the messages it writes are
//! plain trees of strings, numbers and booleans; building them by hand keeps the
//! field names and value spellings under this module's control.

use std::fmt;

/// A JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A signed integer, written exactly.
    Int(i64),
    /// An unsigned integer, written exactly.
    UInt(u64),
    /// A float; NaN and infinities are written as `null` (JSON has no spelling for
    /// them).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, its members in insertion order.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// An empty object, to fill with [`Json::with`].
    pub fn object() -> Self {
        Json::Object(Vec::new())
    }

    /// This object with one more member; on a non-object, `self` unchanged.
    pub fn with(mut self, name: &str, value: impl Into<Json>) -> Self {
        if let Json::Object(members) = &mut self {
            members.push((name.to_string(), value.into()));
        }
        self
    }
}

impl From<bool> for Json {
    fn from(value: bool) -> Self {
        Json::Bool(value)
    }
}

impl From<i64> for Json {
    fn from(value: i64) -> Self {
        Json::Int(value)
    }
}

impl From<i32> for Json {
    fn from(value: i32) -> Self {
        Json::Int(i64::from(value))
    }
}

impl From<u64> for Json {
    fn from(value: u64) -> Self {
        Json::UInt(value)
    }
}

impl From<u32> for Json {
    fn from(value: u32) -> Self {
        Json::UInt(u64::from(value))
    }
}

impl From<f64> for Json {
    fn from(value: f64) -> Self {
        Json::Float(value)
    }
}

impl From<&str> for Json {
    fn from(value: &str) -> Self {
        Json::Str(value.to_string())
    }
}

impl From<String> for Json {
    fn from(value: String) -> Self {
        Json::Str(value)
    }
}

impl From<&String> for Json {
    fn from(value: &String) -> Self {
        Json::Str(value.clone())
    }
}

impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(values: Vec<T>) -> Self {
        Json::Array(values.into_iter().map(Into::into).collect())
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(value) => write!(f, "{value}"),
            Json::Int(value) => write!(f, "{value}"),
            Json::UInt(value) => write!(f, "{value}"),
            // `{:?}` keeps a float a float (`1200.0`) and round-trips every finite value.
            Json::Float(value) if value.is_finite() => write!(f, "{value:?}"),
            Json::Float(_) => f.write_str("null"),
            Json::Str(text) => write_string(f, text),
            Json::Array(values) => {
                f.write_str("[")?;
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{value}")?;
                }
                f.write_str("]")
            }
            Json::Object(members) => {
                f.write_str("{")?;
                for (i, (name, value)) in members.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write_string(f, name)?;
                    write!(f, ":{value}")?;
                }
                f.write_str("}")
            }
        }
    }
}

/// Writes `text` as a JSON string literal.
fn write_string(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    f.write_str("\"")?;
    for c in text.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            // Other control characters, and the two separators JavaScript treats as
            // line ends, escaped so every output line is one JSON value.
            c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                write!(f, "\\u{:04x}", u32::from(c))?
            }
            c => write!(f, "{c}")?,
        }
    }
    f.write_str("\"")
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn writes_compact_json() {
        let value = Json::object()
            .with("name", "press-3")
            .with("rpm", 1200.0)
            .with("count", 3u64)
            .with("delta", -2i64)
            .with("ok", true)
            .with("list", vec![Json::Null, Json::Float(0.5)]);
        assert_eq!(
            value.to_string(),
            r#"{"name":"press-3","rpm":1200.0,"count":3,"delta":-2,"ok":true,"list":[null,0.5]}"#
        );
    }

    #[test]
    fn escapes_strings_and_writes_non_finite_floats_as_null() {
        let value = Json::object()
            .with("text", "a \"quoted\"\\ line\nnext\u{1}\u{2028}é")
            .with("nan", f64::NAN)
            .with("inf", f64::INFINITY);
        assert_eq!(
            value.to_string(),
            r#"{"text":"a \"quoted\"\\ line\nnext\u0001\u2028é","nan":null,"inf":null}"#
        );
        assert!(!value.to_string().contains('\n'));
    }

    #[test]
    fn with_on_a_non_object_changes_nothing() {
        assert_eq!(Json::Null.with("a", 1i64), Json::Null);
    }
}
