//! Schemas as far as twin types are concerned: numbers and booleans, Objects of
//! them, and everything else.

use serde_json::{Map, Value as Json};

use super::describe;
use super::read::Reader;
use crate::config::dtdl::{
    BOOLEAN_SPAN, DOUBLE_SPAN, DtdlError, FLOAT_SPAN, INTEGER_SPAN, LONG_SPAN,
};
use crate::value::ValueKind;

/// Deepest nesting of complex schemas DTDL v3 allows.
const MAX_SCHEMA_DEPTH: usize = 5;

/// A numeric (or boolean) DTDL schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Numeric {
    Boolean,
    Integer,
    Long,
    Float,
    Double,
}

impl Numeric {
    fn parse(term: &str) -> Option<Self> {
        match term {
            "boolean" => Some(Self::Boolean),
            "integer" => Some(Self::Integer),
            "long" => Some(Self::Long),
            "float" => Some(Self::Float),
            "double" => Some(Self::Double),
            _ => None,
        }
    }

    /// The value type of desired values and parameters of this schema.
    pub(super) fn kind(self) -> ValueKind {
        match self {
            Self::Boolean => ValueKind::Bool,
            Self::Integer | Self::Long => ValueKind::Int,
            Self::Float | Self::Double => ValueKind::Float,
        }
    }

    /// Every value of the schema, as the plausible range of a channel.
    pub(super) fn span(self) -> (f64, f64) {
        match self {
            Self::Boolean => BOOLEAN_SPAN,
            Self::Integer => INTEGER_SPAN,
            Self::Long => LONG_SPAN,
            Self::Float => FLOAT_SPAN,
            Self::Double => DOUBLE_SPAN,
        }
    }

    /// The bounds of a desired value or parameter: the span where it is narrower than
    /// the value type's own.
    pub(super) fn bounds(self) -> Option<(f64, f64)> {
        match self {
            Self::Integer | Self::Float => Some(self.span()),
            Self::Boolean | Self::Long | Self::Double => None,
        }
    }
}

/// A schema, as far as twin types are concerned.
pub(super) enum Schema<'a> {
    /// A number or a boolean.
    Number(Numeric),
    /// An Object, with its fields.
    Object(&'a Map<String, Json>),
    /// Anything else, in words (`a Map`).
    Other(String),
}

/// A field of an Object schema.
pub(super) struct Field<'a> {
    pub(super) name: &'a str,
    pub(super) co_types: Vec<String>,
    pub(super) element: &'a Map<String, Json>,
    pub(super) schema: Schema<'a>,
}

impl Reader {
    /// What `value`, a `schema`, is for twin types; `owner` is the Interface whose
    /// `schemas` a DTMI refers to.
    pub(super) fn schema<'a>(
        &'a self,
        owner: usize,
        value: &'a Json,
        at: &str,
        depth: usize,
    ) -> Result<Schema<'a>, DtdlError> {
        let interface = &self.interfaces[owner];
        let invalid = |message: String| DtdlError::Invalid {
            origin: interface.origin.clone(),
            element: at.to_string(),
            message,
        };
        if depth > MAX_SCHEMA_DEPTH {
            return Err(invalid(format!(
                "schemas nest deeper than {MAX_SCHEMA_DEPTH} levels"
            )));
        }
        match value {
            Json::String(term) => {
                if let Some(numeric) = Numeric::parse(term) {
                    return Ok(Schema::Number(numeric));
                }
                match term.as_str() {
                    "date" | "dateTime" | "duration" | "string" | "time" => {
                        Ok(Schema::Other(format!("a `{term}`")))
                    }
                    "point" | "lineString" | "polygon" | "multiPoint" | "multiLineString"
                    | "multiPolygon" => Ok(Schema::Other(format!("a geospatial `{term}`"))),
                    _ if term.starts_with("dtmi:standard:schema:geospatial:") => {
                        Ok(Schema::Other(format!("a geospatial `{term}`")))
                    }
                    _ if term.starts_with("dtmi:") => match interface.schemas.get(term) {
                        Some(defined) => self.schema(owner, defined, at, depth + 1),
                        None => Err(invalid(format!(
                            "schema `{term}` is not among the interface's `schemas`"
                        ))),
                    },
                    _ => Err(invalid(format!(
                        "`{term}` is not a DTDL v3 schema (the primitive schemas are boolean, \
                         date, dateTime, double, duration, float, integer, long, string and time)"
                    ))),
                }
            }
            Json::Object(object) => match object.get("@type").and_then(Json::as_str) {
                Some("Object") => Ok(Schema::Object(object)),
                Some("Array") => Ok(Schema::Other("an Array".to_string())),
                Some("Enum") => Ok(Schema::Other("an Enum".to_string())),
                Some("Map") => Ok(Schema::Other("a Map".to_string())),
                _ => Err(invalid(
                    "a schema object's `@type` must be Array, Enum, Map or Object".to_string(),
                )),
            },
            other => Err(invalid(format!(
                "`schema` is {}, not a schema",
                describe(other)
            ))),
        }
    }
}
