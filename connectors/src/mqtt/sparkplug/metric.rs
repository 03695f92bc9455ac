//! Metric values in and out: what a Sparkplug metric is worth as a reading, and the
//! payloads Doppel publishes (commands, rebirth requests, host state).

use doppel_runtime::{Timestamp, Value};
use prost::Message;

use super::proto::DataType;
use super::proto::payload::{Metric, metric};
use super::{BD_SEQ, REBIRTH};
use crate::drops::DropKind;

/// Milliseconds since the epoch of `time`, as Sparkplug writes them (never negative).
pub(super) fn millis(time: Timestamp) -> u64 {
    time.as_micros().div_euclid(1000).max(0) as u64
}

/// The time of Sparkplug milliseconds (saturating far in the future).
pub(super) fn from_millis(millis: u64) -> Timestamp {
    Timestamp::from_millis(i64::try_from(millis).unwrap_or(i64::MAX))
}

/// Whether `datatype` names a number or a boolean (or says nothing), so that the
/// value field decides.
fn is_numeric(datatype: u32) -> bool {
    datatype <= DataType::Boolean as u32 || DataType::try_from(datatype as i32).is_err()
}

fn is_signed(datatype: u32) -> bool {
    [
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
    ]
    .iter()
    .any(|signed| *signed as u32 == datatype)
}

/// The value of a metric as a reading, read as `datatype`: numbers and booleans become
/// floats (`true` is 1). Text, bytes, data sets, templates, date-times and arrays are
/// the wrong type; NaN and infinities are not finite. Integers narrower than 32 bits
/// are read from their low bits, so both sign-extended and truncated encodings of a
/// negative value read right.
pub(super) fn reading_value(value: Option<&metric::Value>, datatype: u32) -> Result<f64, DropKind> {
    if !is_numeric(datatype) {
        return Err(DropKind::WrongType);
    }
    let number = match value {
        Some(metric::Value::IntValue(raw)) => {
            let raw = *raw;
            match DataType::try_from(datatype as i32) {
                Ok(DataType::Int8) => f64::from(raw as u8 as i8),
                Ok(DataType::Int16) => f64::from(raw as u16 as i16),
                Ok(DataType::Int32) => f64::from(raw as i32),
                Ok(DataType::UInt8) => f64::from(raw as u8),
                Ok(DataType::UInt16) => f64::from(raw as u16),
                _ => f64::from(raw),
            }
        }
        Some(metric::Value::LongValue(raw)) if is_signed(datatype) => *raw as i64 as f64,
        Some(metric::Value::LongValue(raw)) => *raw as f64,
        Some(metric::Value::FloatValue(float)) => f64::from(*float),
        Some(metric::Value::DoubleValue(double)) => *double,
        Some(metric::Value::BooleanValue(flag)) => f64::from(u8::from(*flag)),
        Some(
            metric::Value::StringValue(_)
            | metric::Value::BytesValue(_)
            | metric::Value::DatasetValue(_)
            | metric::Value::TemplateValue(_),
        )
        | None => return Err(DropKind::WrongType),
    };
    if number.is_finite() {
        Ok(number)
    } else {
        Err(DropKind::NotFinite)
    }
}

/// The `bdSeq` of a birth or death certificate, if it carries one.
pub(super) fn bd_seq(metrics: &[Metric]) -> Option<u64> {
    let metric = metrics.iter().find(|m| m.name.as_deref() == Some(BD_SEQ))?;
    match metric.value {
        Some(metric::Value::LongValue(value)) => Some(value),
        Some(metric::Value::IntValue(value)) => Some(u64::from(value)),
        _ => None,
    }
}

/// A command metric carrying `value`: a float as Double, an integer as Int64, a
/// boolean as Boolean.
pub(super) fn command_metric(name: &str, value: Value, at: u64) -> Metric {
    let (datatype, value) = match value {
        Value::Float(float) => (DataType::Double, metric::Value::DoubleValue(float)),
        Value::Int(int) => (DataType::Int64, metric::Value::LongValue(int as u64)),
        Value::Bool(flag) => (DataType::Boolean, metric::Value::BooleanValue(flag)),
    };
    Metric {
        name: Some(name.to_string()),
        timestamp: Some(at),
        datatype: Some(datatype as u32),
        value: Some(value),
        ..Metric::default()
    }
}

/// An NCMD payload asking an edge node to publish its births again.
pub(super) fn rebirth_request(now: Timestamp) -> Vec<u8> {
    let at = millis(now);
    super::proto::Payload {
        timestamp: Some(at),
        metrics: vec![command_metric(REBIRTH, Value::Bool(true), at)],
        ..Default::default()
    }
    .encode_to_vec()
}

/// The host application state message: `{"online":…,"timestamp":…}`.
pub(super) fn host_state(online: bool, at: u64) -> Vec<u8> {
    serde_json::json!({ "online": online, "timestamp": at })
        .to_string()
        .into_bytes()
}
