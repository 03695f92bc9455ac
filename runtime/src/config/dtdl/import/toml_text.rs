//! Writing twin types by hand: value kinds and their zeros, and the key, string, float
//! and comment writers of [`crate::config::toml_text`].

use crate::value::ValueKind;

/// The `type` of a desired value or parameter, as TOML.
pub(super) fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Float => "float",
        ValueKind::Int => "int",
        ValueKind::Bool => "bool",
    }
}

/// The initial value of a desired value of `kind`, as TOML.
pub(super) fn zero(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Float => "0.0",
        ValueKind::Int => "0",
        ValueKind::Bool => "false",
    }
}

pub(super) use crate::config::toml_text::{
    comment as comment_text, float as toml_float, key as toml_key, string as toml_string,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_kinds_are_written_as_types_name_them() {
        assert_eq!(
            (kind_name(ValueKind::Int), zero(ValueKind::Int)),
            ("int", "0")
        );
        assert_eq!(
            (kind_name(ValueKind::Float), zero(ValueKind::Float)),
            ("float", "0.0")
        );
    }
}
