//! Conversions between OPC UA values and Doppel's: status codes to quality, variants to
//! floats, OPC UA timestamps to Doppel's, and typed values to the variant a node takes.

use doppel_runtime::{Quality, Timestamp, Value};
use opcua::types::{DataTypeId, DataValue, DateTime, NodeId, StatusCode, Variant};

use super::config::ScalarType;

/// Microseconds from the OPC UA epoch (1601-01-01) to the Unix epoch (1970-01-01).
const UNIX_EPOCH_FROM_OPCUA_MICROS: i64 = 11_644_473_600 * 1_000_000;

/// The quality of a status code, from its two severity bits: `00` good, `01`
/// uncertain, `10` bad; the reserved `11` counts as bad. A missing status is good.
pub fn quality_of(status: Option<StatusCode>) -> Quality {
    let Some(status) = status else {
        return Quality::Good;
    };
    match status.bits() >> 30 {
        0b00 => Quality::Good,
        0b01 => Quality::Uncertain,
        _ => Quality::Bad,
    }
}

/// A numeric or boolean scalar as a float (`true` is 1.0); `None` for anything else
/// (strings, structures, arrays, empty values).
pub fn number_of(variant: &Variant) -> Option<f64> {
    Some(match *variant {
        Variant::Boolean(b) => f64::from(u8::from(b)),
        Variant::SByte(v) => f64::from(v),
        Variant::Byte(v) => f64::from(v),
        Variant::Int16(v) => f64::from(v),
        Variant::UInt16(v) => f64::from(v),
        Variant::Int32(v) => f64::from(v),
        Variant::UInt32(v) => f64::from(v),
        Variant::Int64(v) => v as f64,
        Variant::UInt64(v) => v as f64,
        Variant::Float(v) => f64::from(v),
        Variant::Double(v) => v,
        _ => return None,
    })
}

/// An OPC UA timestamp as a Doppel timestamp; `None` for the null timestamp.
pub fn timestamp_of(time: &DateTime) -> Option<Timestamp> {
    if time.is_null() {
        return None;
    }
    Some(Timestamp(
        (time.checked_ticks() / 10).saturating_sub(UNIX_EPOCH_FROM_OPCUA_MICROS),
    ))
}

/// A data change as Doppel reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoded {
    /// The value.
    pub value: f64,
    /// The source timestamp, else the server timestamp, else the receive time.
    pub source_time: Timestamp,
    /// True when the server stamped `source_time` (source or server timestamp).
    pub stamped: bool,
    /// The quality of the status code.
    pub quality: Quality,
}

/// Why a data change cannot become a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Undecodable {
    /// The data change carries no value (a bad status often comes without one, as
    /// Part 4 §7.7.1 asks): its quality, status name and time.
    NoValue {
        /// The quality of its status.
        quality: Quality,
        /// The status's name (`BadSensorFailure`).
        status: String,
        /// Its source timestamp, else server timestamp, else the receive time.
        at: Timestamp,
    },
    /// The value is not a numeric or boolean scalar; the variant's type name.
    NotNumeric(&'static str),
}

impl std::fmt::Display for Undecodable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Undecodable::NoValue {
                quality, status, ..
            } => write!(f, "no value ({status}, quality {})", quality.as_str()),
            Undecodable::NotNumeric(kind) => write!(f, "{kind} is not a number"),
        }
    }
}

/// Reads a data change: its value as a float, its time and its quality.
pub fn decode(data: &DataValue, received: Timestamp) -> Result<Decoded, Undecodable> {
    let quality = quality_of(data.status);
    let stamped = data
        .source_timestamp
        .as_ref()
        .and_then(timestamp_of)
        .or_else(|| data.server_timestamp.as_ref().and_then(timestamp_of));
    let value = match &data.value {
        None | Some(Variant::Empty) => {
            return Err(Undecodable::NoValue {
                quality,
                status: data
                    .status
                    .unwrap_or(StatusCode::Good)
                    .sub_code()
                    .to_string(),
                at: stamped.unwrap_or(received),
            });
        }
        Some(variant) => {
            number_of(variant).ok_or(Undecodable::NotNumeric(variant_name(variant)))?
        }
    };
    Ok(Decoded {
        value,
        source_time: stamped.unwrap_or(received),
        stamped: stamped.is_some(),
        quality,
    })
}

/// The sequence number of a reading: its source time in microseconds since the Unix
/// epoch (0 before it). Kernels de-duplicate per (source, channel), so a value
/// delivered twice with the same source timestamp — a republish, or the initial value
/// of a re-created subscription — is applied once.
pub fn seq_of(source_time: Timestamp) -> u64 {
    u64::try_from(source_time.as_micros()).unwrap_or(0)
}

fn variant_name(variant: &Variant) -> &'static str {
    match variant {
        Variant::String(_) => "String",
        Variant::DateTime(_) => "DateTime",
        Variant::Guid(_) => "Guid",
        Variant::StatusCode(_) => "StatusCode",
        Variant::ByteString(_) => "ByteString",
        Variant::XmlElement(_) => "XmlElement",
        Variant::QualifiedName(_) => "QualifiedName",
        Variant::LocalizedText(_) => "LocalizedText",
        Variant::NodeId(_) => "NodeId",
        Variant::ExpandedNodeId(_) => "ExpandedNodeId",
        Variant::ExtensionObject(_) => "ExtensionObject",
        Variant::Variant(_) => "Variant",
        Variant::DataValue(_) => "DataValue",
        Variant::DiagnosticInfo(_) => "DiagnosticInfo",
        Variant::Array(_) => "Array",
        _ => "value",
    }
}

impl ScalarType {
    /// The scalar type of a variable's DataType attribute. Built-in numeric types map to
    /// themselves, the abstract `Number` to Double, `Integer` to Int64, `UInteger` to
    /// UInt64 and enumerations to Int32; anything else is `None`.
    pub fn of_data_type(data_type: &NodeId) -> Option<ScalarType> {
        if data_type.namespace != 0 {
            return None;
        }
        let id = data_type.as_u32()?;
        let is = |known: DataTypeId| id == known as u32;
        Some(if is(DataTypeId::Boolean) {
            ScalarType::Boolean
        } else if is(DataTypeId::SByte) {
            ScalarType::SByte
        } else if is(DataTypeId::Byte) {
            ScalarType::Byte
        } else if is(DataTypeId::Int16) {
            ScalarType::Int16
        } else if is(DataTypeId::UInt16) {
            ScalarType::UInt16
        } else if is(DataTypeId::Int32) || is(DataTypeId::Enumeration) {
            ScalarType::Int32
        } else if is(DataTypeId::UInt32) {
            ScalarType::UInt32
        } else if is(DataTypeId::Int64) || is(DataTypeId::Integer) {
            ScalarType::Int64
        } else if is(DataTypeId::UInt64) || is(DataTypeId::UInteger) {
            ScalarType::UInt64
        } else if is(DataTypeId::Float) {
            ScalarType::Float
        } else if is(DataTypeId::Double) || is(DataTypeId::Number) {
            ScalarType::Double
        } else {
            return None;
        })
    }

    /// The type a value goes as when the node's type is unknown: Double for floats,
    /// Int64 for integers, Boolean for booleans.
    pub fn natural(value: Value) -> ScalarType {
        match value {
            Value::Bool(_) => ScalarType::Boolean,
            Value::Int(_) => ScalarType::Int64,
            Value::Float(_) => ScalarType::Double,
        }
    }

    /// Converts `value` to this type: booleans to 0/1 and back (non-zero is true),
    /// floats to integers by rounding. A value outside the type's range is refused.
    pub fn variant(self, value: Value) -> Result<Variant, OutOfRange> {
        let out_of_range = || OutOfRange {
            value,
            data_type: self,
        };
        if self == ScalarType::Boolean {
            return Ok(Variant::Boolean(match value {
                Value::Bool(b) => b,
                Value::Int(i) => i != 0,
                Value::Float(f) => f != 0.0,
            }));
        }
        if let ScalarType::Float | ScalarType::Double = self {
            let float = value.as_f64();
            if !float.is_finite() {
                return Err(out_of_range());
            }
            if self == ScalarType::Double {
                return Ok(Variant::Double(float));
            }
            if float.abs() > f64::from(f32::MAX) {
                return Err(out_of_range());
            }
            return Ok(Variant::Float(float as f32));
        }
        let integer: i128 = match value {
            Value::Bool(b) => i128::from(b),
            Value::Int(i) => i128::from(i),
            Value::Float(f) if f.is_finite() && f.abs() < 1.8e19 => f.round() as i128,
            Value::Float(_) => return Err(out_of_range()),
        };
        let variant = match self {
            ScalarType::SByte => i8::try_from(integer).ok().map(Variant::SByte),
            ScalarType::Byte => u8::try_from(integer).ok().map(Variant::Byte),
            ScalarType::Int16 => i16::try_from(integer).ok().map(Variant::Int16),
            ScalarType::UInt16 => u16::try_from(integer).ok().map(Variant::UInt16),
            ScalarType::Int32 => i32::try_from(integer).ok().map(Variant::Int32),
            ScalarType::UInt32 => u32::try_from(integer).ok().map(Variant::UInt32),
            ScalarType::Int64 => i64::try_from(integer).ok().map(Variant::Int64),
            ScalarType::UInt64 => u64::try_from(integer).ok().map(Variant::UInt64),
            ScalarType::Boolean | ScalarType::Float | ScalarType::Double => None,
        };
        variant.ok_or_else(out_of_range)
    }
}

/// A value that does not fit the OPC UA type it must be written as.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{value} does not fit {data_type}")]
pub struct OutOfRange {
    /// The value.
    pub value: Value,
    /// The type it had to fit.
    pub data_type: ScalarType,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn any_variant() -> impl Strategy<Value = Variant> {
        prop_oneof![
            any::<f64>().prop_map(Variant::Double),
            any::<f32>().prop_map(Variant::Float),
            any::<i64>().prop_map(Variant::Int64),
            any::<u64>().prop_map(Variant::UInt64),
            any::<i16>().prop_map(Variant::Int16),
            any::<bool>().prop_map(Variant::Boolean),
            ".{0,12}".prop_map(Variant::from),
            Just(Variant::Empty),
        ]
    }

    fn any_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<f64>().prop_map(Value::Float),
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    const SCALARS: [ScalarType; 11] = [
        ScalarType::Boolean,
        ScalarType::SByte,
        ScalarType::Byte,
        ScalarType::Int16,
        ScalarType::UInt16,
        ScalarType::Int32,
        ScalarType::UInt32,
        ScalarType::Int64,
        ScalarType::UInt64,
        ScalarType::Float,
        ScalarType::Double,
    ];

    proptest! {
        /// Whatever a server sends, decoding neither panics nor invents: a reading has
        /// the variant's number, the status's severity and a timestamp it was given.
        #[test]
        fn decoding_any_data_change_is_total(
            variant in any_variant(),
            status in proptest::option::of(any::<u32>()),
            source in proptest::option::of(any::<i64>()),
            server in proptest::option::of(any::<i64>()),
        ) {
            let data = DataValue {
                value: Some(variant.clone()),
                status: status.map(StatusCode::from),
                source_timestamp: source.map(DateTime::from),
                server_timestamp: server.map(DateTime::from),
                ..Default::default()
            };
            let received = Timestamp(1_700_000_000_000_000);
            match decode(&data, received) {
                Ok(decoded) => {
                    let number = number_of(&variant).unwrap();
                    prop_assert!(decoded.value == number || (decoded.value.is_nan() && number.is_nan()));
                    prop_assert_eq!(decoded.quality, quality_of(data.status));
                    let candidates = [
                        data.source_timestamp.as_ref().and_then(timestamp_of),
                        data.server_timestamp.as_ref().and_then(timestamp_of),
                        Some(received),
                    ];
                    prop_assert!(candidates.contains(&Some(decoded.source_time)));
                }
                Err(Undecodable::NoValue { .. }) => prop_assert_eq!(variant, Variant::Empty),
                Err(Undecodable::NotNumeric(_)) => prop_assert!(number_of(&variant).is_none()),
            }
        }

        /// A converted value reads back as the value (rounded for integer types) or is
        /// refused; never wrapped around.
        #[test]
        fn conversions_are_faithful_or_refused(value in any_value(), index in 0usize..SCALARS.len()) {
            let scalar = SCALARS[index];
            match scalar.variant(value) {
                Ok(variant) => {
                    let back = number_of(&variant).unwrap();
                    let expected = match scalar {
                        ScalarType::Boolean => f64::from(u8::from(value.as_f64() != 0.0)),
                        ScalarType::Float => f64::from(value.as_f64() as f32),
                        ScalarType::Double => value.as_f64(),
                        _ => value.as_f64().round(),
                    };
                    prop_assert!(
                        back == expected || (back - expected).abs() <= expected.abs() * 1e-15,
                        "{value} as {scalar} read back as {back}"
                    );
                }
                Err(error) => prop_assert_eq!(error.data_type, scalar),
            }
        }
    }

    #[test]
    fn quality_follows_the_severity_bits() {
        assert_eq!(quality_of(None), Quality::Good);
        assert_eq!(quality_of(Some(StatusCode::Good)), Quality::Good);
        assert_eq!(
            quality_of(Some(StatusCode::UncertainLastUsableValue)),
            Quality::Uncertain
        );
        assert_eq!(
            quality_of(Some(StatusCode::UncertainSensorNotAccurate)),
            Quality::Uncertain
        );
        assert_eq!(quality_of(Some(StatusCode::BadSensorFailure)), Quality::Bad);
        assert_eq!(
            quality_of(Some(StatusCode::BadCommunicationError)),
            Quality::Bad
        );
        assert_eq!(
            quality_of(Some(StatusCode::from(0xC000_0000))),
            Quality::Bad
        );
        // Info bits (here: overflow) leave the severity alone.
        assert_eq!(
            quality_of(Some(StatusCode::from(0x0000_0480))),
            Quality::Good
        );
    }

    #[test]
    fn numbers_and_booleans_become_floats_and_the_rest_does_not() {
        assert_eq!(number_of(&Variant::Double(2.5)), Some(2.5));
        assert_eq!(number_of(&Variant::Float(0.5)), Some(0.5));
        assert_eq!(number_of(&Variant::Int16(-3)), Some(-3.0));
        assert_eq!(number_of(&Variant::UInt64(7)), Some(7.0));
        assert_eq!(number_of(&Variant::SByte(-1)), Some(-1.0));
        assert_eq!(number_of(&Variant::Boolean(true)), Some(1.0));
        assert_eq!(number_of(&Variant::Boolean(false)), Some(0.0));
        assert_eq!(number_of(&Variant::from("12.5")), None);
        assert_eq!(number_of(&Variant::Empty), None);
        assert_eq!(number_of(&Variant::from(vec![1.0f64, 2.0])), None);
    }

    #[test]
    fn timestamps_prefer_source_then_server_then_receive_time() {
        let received = Timestamp(1_700_000_000_000_000);
        let source = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.678901Z").unwrap();
        let server = DateTime::parse_from_rfc3339("2024-01-02T03:04:06Z").unwrap();
        let source_micros = 1_704_164_645_678_901;
        let full = DataValue {
            value: Some(Variant::Double(1.0)),
            status: Some(StatusCode::Good),
            source_timestamp: Some(source),
            server_timestamp: Some(server),
            ..Default::default()
        };
        let decoded = decode(&full, received).unwrap();
        assert_eq!(decoded.source_time, Timestamp(source_micros));
        assert_eq!(seq_of(decoded.source_time), source_micros as u64);

        let server_only = DataValue {
            source_timestamp: Some(DateTime::null()),
            ..full.clone()
        };
        assert_eq!(
            decode(&server_only, received).unwrap().source_time,
            Timestamp(1_704_164_646_000_000)
        );
        let neither = DataValue {
            source_timestamp: None,
            server_timestamp: None,
            ..full
        };
        assert_eq!(decode(&neither, received).unwrap().source_time, received);
        assert_eq!(seq_of(Timestamp(-5)), 0);
    }

    #[test]
    fn decode_keeps_quality_and_refuses_non_numbers() {
        let bad = DataValue {
            value: Some(Variant::Double(3.0)),
            status: Some(StatusCode::BadSensorFailure),
            ..Default::default()
        };
        let decoded = decode(&bad, Timestamp(1)).unwrap();
        assert_eq!(decoded.quality, Quality::Bad);
        assert_eq!(decoded.value, 3.0);

        let no_value = DataValue {
            value: None,
            status: Some(StatusCode::BadNoCommunication),
            ..Default::default()
        };
        assert_eq!(
            decode(&no_value, Timestamp(1)),
            Err(Undecodable::NoValue {
                quality: Quality::Bad,
                status: "BadNoCommunication".to_string(),
                at: Timestamp(1),
            })
        );
        let text = DataValue::new_now(Variant::from("hot"));
        assert_eq!(
            decode(&text, Timestamp(1)),
            Err(Undecodable::NotNumeric("String"))
        );
    }

    #[test]
    fn data_types_map_to_scalar_types() {
        let of = |id: DataTypeId| ScalarType::of_data_type(&id.into());
        assert_eq!(of(DataTypeId::Double), Some(ScalarType::Double));
        assert_eq!(of(DataTypeId::Float), Some(ScalarType::Float));
        assert_eq!(of(DataTypeId::Int32), Some(ScalarType::Int32));
        assert_eq!(of(DataTypeId::UInt16), Some(ScalarType::UInt16));
        assert_eq!(of(DataTypeId::Boolean), Some(ScalarType::Boolean));
        assert_eq!(of(DataTypeId::Number), Some(ScalarType::Double));
        assert_eq!(of(DataTypeId::String), None);
        assert_eq!(ScalarType::of_data_type(&NodeId::new(2, 11u32)), None);
        assert_eq!(ScalarType::of_data_type(&NodeId::new(0, "Double")), None);
    }

    #[test]
    fn values_convert_to_the_node_type_within_range() {
        assert_eq!(
            ScalarType::Double.variant(Value::Float(1500.5)),
            Ok(Variant::Double(1500.5))
        );
        assert_eq!(
            ScalarType::Double.variant(Value::Int(3)),
            Ok(Variant::Double(3.0))
        );
        assert_eq!(
            ScalarType::Float.variant(Value::Float(0.25)),
            Ok(Variant::Float(0.25))
        );
        assert_eq!(
            ScalarType::Int32.variant(Value::Float(1499.6)),
            Ok(Variant::Int32(1500))
        );
        assert_eq!(
            ScalarType::Int16.variant(Value::Int(-7)),
            Ok(Variant::Int16(-7))
        );
        assert_eq!(
            ScalarType::UInt16.variant(Value::Int(70_000)),
            Err(OutOfRange {
                value: Value::Int(70_000),
                data_type: ScalarType::UInt16
            })
        );
        assert!(ScalarType::UInt32.variant(Value::Int(-1)).is_err());
        assert!(ScalarType::Float.variant(Value::Float(1e300)).is_err());
        assert!(ScalarType::Int64.variant(Value::Float(f64::NAN)).is_err());
        assert_eq!(
            ScalarType::Boolean.variant(Value::Bool(true)),
            Ok(Variant::Boolean(true))
        );
        assert_eq!(
            ScalarType::Boolean.variant(Value::Float(0.0)),
            Ok(Variant::Boolean(false))
        );
        assert_eq!(
            ScalarType::Byte.variant(Value::Bool(true)),
            Ok(Variant::Byte(1))
        );
        assert_eq!(
            ScalarType::UInt64.variant(Value::Int(5)),
            Ok(Variant::UInt64(5))
        );
        assert_eq!(ScalarType::natural(Value::Float(1.0)), ScalarType::Double);
        assert_eq!(ScalarType::natural(Value::Int(1)), ScalarType::Int64);
        assert_eq!(ScalarType::natural(Value::Bool(true)), ScalarType::Boolean);
    }
}
