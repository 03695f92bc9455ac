//! From what the walk found and read to a proposal: which variables and methods can be
//! channels, desired values and commands, under which names, with which types, units
//! and ranges.

use std::str::FromStr;

use doppel_runtime::{AssetPath, Value, ValueKind};
use opcua::types::{Argument, DataTypeId, DataValue, EUInformation, NodeId, Range, Variant};

use super::BrowseOptions;
use super::walk::{
    Facts, INPUT_ARGUMENTS, MethodFacts, Survey, VariableFacts, status_text, text_of,
};
use crate::opcua::config::{OpcUaConfig, ScalarType};
use crate::opcua::convert::number_of;
use crate::opcua::proposal::{
    Names, Proposal, ProposedCall, ProposedChannel, ProposedCommand, ProposedDesired,
    ProposedParam, RangeSource, SkipReason, snake_case,
};

/// AccessLevel bits (Part 3 §8.57): the current value can be read, written.
const CURRENT_READ: u8 = 0x01;
const CURRENT_WRITE: u8 = 0x02;
/// ValueRank of a scalar (Part 3 §5.6.2).
const SCALAR: i32 = -1;

/// Turns what was found and read into a proposal: variables first (channels, then the
/// desired values and commands of the writable ones), then methods.
pub(super) fn propose(
    connector: OpcUaConfig,
    survey: Survey,
    facts: Facts,
    options: &BrowseOptions,
) -> Proposal {
    let type_name = options
        .type_name
        .clone()
        .unwrap_or_else(|| or_else(snake_case(&survey.root.browse_name), "machine"));
    let (asset, asset_is_placeholder) = match &options.asset {
        Some(asset) => (asset.clone(), false),
        None => (placeholder_asset(&type_name), true),
    };
    let mut proposal = Proposal {
        connector,
        root: survey.root.node.to_string(),
        root_name: survey.root.browse_name.clone(),
        type_name,
        asset,
        asset_is_placeholder,
        sampling_ms: options.sampling_ms,
        nodes: survey.visited,
        channels: Vec::new(),
        desired: Vec::new(),
        commands: Vec::new(),
        skipped: survey.skipped,
        unused_properties: survey.unused_properties,
        cut: survey.cut,
    };
    let mut channel_names = Names::default();
    let mut command_names = Names::default();
    for (variable, read) in survey.variables.iter().zip(&facts.variables) {
        let accepted = match accept_variable(read) {
            Ok(accepted) => accepted,
            Err(reason) => {
                proposal.skipped.push(variable.skipped(reason));
                continue;
            }
        };
        let Some(node) = node_text(&variable.node) else {
            proposal
                .skipped
                .push(variable.skipped(SkipReason::NodeIdText));
            continue;
        };
        let scalar = accepted.scalar;
        let (range, range_source) = channel_range(scalar, eu_range(read.eu_range.as_ref()));
        let unit = unit_of(read.engineering_units.as_ref());
        let name = channel_names.claim(&variable.name());
        proposal.channels.push(ProposedChannel {
            name: name.clone(),
            node: node.clone(),
            data_type: scalar,
            unit: unit.clone(),
            range,
            range_source,
        });
        if !accepted.writable {
            continue;
        }
        let kind = kind_of(scalar);
        let bounds = match (kind, range_source) {
            (ValueKind::Bool, _) => None,
            (_, RangeSource::EuRange) => Some(range),
            _ => integer_span(scalar),
        };
        proposal.desired.push(ProposedDesired {
            name: name.clone(),
            kind,
            unit: unit.clone(),
            range: bounds,
            initial: initial_value(kind, read.value.value.as_ref(), bounds),
            reported: Some(name.clone()),
            written_to: Some(node),
        });
        proposal.commands.push(ProposedCommand {
            name: command_names.claim(&format!("set_{name}")),
            params: vec![ProposedParam {
                name: "value".to_string(),
                kind,
                range: bounds,
                unit,
                sets: name,
                data_type: scalar,
            }],
            sets_const: None,
            calls: None,
        });
    }
    // A method's desired values are named apart from every channel, so a reader never
    // takes one for the reading of another.
    let mut desired_names = Names::default();
    for name in proposal.channels.iter().map(|channel| &channel.name) {
        desired_names.reserve(name);
    }
    for (method, read) in survey.methods.iter().zip(&facts.methods) {
        let arguments = match accept_method(read) {
            Ok(arguments) => arguments,
            Err(reason) => {
                proposal.skipped.push(method.skipped(reason));
                continue;
            }
        };
        let (Some(method_node), Some(object_node)) =
            (node_text(&method.node), node_text(&method.parent))
        else {
            proposal
                .skipped
                .push(method.skipped(SkipReason::NodeIdText));
            continue;
        };
        let command = command_names.claim(&method.name());
        let mut param_names = Names::default();
        let mut params = Vec::with_capacity(arguments.len());
        for (position, (argument, scalar)) in arguments.into_iter().enumerate() {
            let param = param_names.claim(&or_else(
                snake_case(&argument),
                &format!("arg{}", position + 1),
            ));
            let kind = kind_of(scalar);
            let bounds = integer_span(scalar);
            let desired = desired_names.claim(&format!("{command}_{param}"));
            proposal.desired.push(ProposedDesired {
                name: desired.clone(),
                kind,
                unit: String::new(),
                range: bounds,
                initial: None,
                reported: None,
                written_to: None,
            });
            params.push(ProposedParam {
                name: param,
                kind,
                range: bounds,
                unit: String::new(),
                sets: desired,
                data_type: scalar,
            });
        }
        let sets_const = if params.is_empty() {
            let desired = desired_names.claim(&format!("{command}_requested"));
            proposal.desired.push(ProposedDesired {
                name: desired.clone(),
                kind: ValueKind::Bool,
                unit: String::new(),
                range: None,
                initial: Some(Value::Bool(false)),
                reported: None,
                written_to: None,
            });
            Some((desired, Value::Bool(true)))
        } else {
            None
        };
        proposal.commands.push(ProposedCommand {
            name: command,
            params,
            sets_const,
            calls: Some(ProposedCall {
                object: object_node,
                method: method_node,
            }),
        });
    }
    proposal
}

/// A variable the proposal takes: its type, and whether this user may write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Accepted {
    scalar: ScalarType,
    writable: bool,
}

/// Whether a variable can be a channel: a readable numeric or Boolean scalar.
fn accept_variable(facts: &VariableFacts) -> Result<Accepted, SkipReason> {
    let data_type = match &facts.data_type.value {
        Some(Variant::NodeId(data_type)) => data_type,
        _ => {
            return Err(SkipReason::Unreadable {
                what: "DataType".to_string(),
                status: status_text(&facts.data_type),
            });
        }
    };
    let Some(scalar) = ScalarType::of_data_type(data_type) else {
        return Err(SkipReason::NotNumeric {
            data_type: data_type_name(data_type),
        });
    };
    // ValueRank is mandatory; without it the value itself tells an array.
    let value_rank = match &facts.value_rank.value {
        Some(Variant::Int32(rank)) => *rank,
        _ => SCALAR,
    };
    if value_rank >= 0 || matches!(facts.value.value, Some(Variant::Array(_))) {
        return Err(SkipReason::NotScalar { value_rank });
    }
    let access = access_bits(&facts.user_access_level)
        .or_else(|| access_bits(&facts.access_level))
        .unwrap_or(CURRENT_READ);
    if access & CURRENT_READ == 0 {
        return Err(SkipReason::NotReadable);
    }
    Ok(Accepted {
        scalar,
        writable: access & CURRENT_WRITE != 0,
    })
}

/// A method's input arguments, by name and type, if it can be a command: executable,
/// and every argument a numeric or Boolean scalar.
fn accept_method(facts: &MethodFacts) -> Result<Vec<(String, ScalarType)>, SkipReason> {
    if matches!(facts.user_executable.value, Some(Variant::Boolean(false))) {
        return Err(SkipReason::NotExecutable);
    }
    let Some(input) = &facts.input_arguments else {
        return Ok(Vec::new());
    };
    let items: Vec<&Variant> = match &input.value {
        None | Some(Variant::Empty) if input.status.is_none_or(|status| status.is_good()) => {
            return Ok(Vec::new());
        }
        None | Some(Variant::Empty) => {
            return Err(SkipReason::Unreadable {
                what: INPUT_ARGUMENTS.to_string(),
                status: status_text(input),
            });
        }
        Some(Variant::Array(array)) => array.values.iter().collect(),
        Some(other) => vec![other],
    };
    items
        .into_iter()
        .map(|item| {
            let Variant::ExtensionObject(object) = item else {
                return Err(SkipReason::UndecodableArguments);
            };
            let Some(argument) = object.inner_as::<Argument>() else {
                return Err(SkipReason::UndecodableArguments);
            };
            let name = text_of(&argument.name);
            if argument.value_rank >= 0 {
                return Err(SkipReason::ArrayArgument { argument: name });
            }
            match ScalarType::of_data_type(&argument.data_type) {
                Some(scalar) => Ok((name, scalar)),
                None => Err(SkipReason::UnsupportedArgument {
                    argument: name,
                    data_type: data_type_name(&argument.data_type),
                }),
            }
        })
        .collect()
}

/// The low and high of an `EURange` property's value.
fn eu_range(value: Option<&DataValue>) -> Option<(f64, f64)> {
    match &value?.value {
        Some(Variant::ExtensionObject(object)) => object
            .inner_as::<Range>()
            .map(|range| (range.low, range.high)),
        _ => None,
    }
}

/// A channel's range: the EURange when it is a range, else the data type's span.
fn channel_range(scalar: ScalarType, eu_range: Option<(f64, f64)>) -> ((f64, f64), RangeSource) {
    match eu_range {
        Some((low, high)) if low.is_finite() && high.is_finite() && low < high => {
            ((low, high), RangeSource::EuRange)
        }
        Some((low, high)) => (span_of(scalar), RangeSource::UnusableEuRange { low, high }),
        None => (span_of(scalar), RangeSource::DataType),
    }
}

/// The display name of an `EngineeringUnits` property's value (its description when
/// the display name is empty); empty without one.
fn unit_of(value: Option<&DataValue>) -> String {
    let Some(DataValue {
        value: Some(Variant::ExtensionObject(object)),
        ..
    }) = value
    else {
        return String::new();
    };
    let Some(units) = object.inner_as::<EUInformation>() else {
        return String::new();
    };
    let display = text_of(&units.display_name.text);
    if display.trim().is_empty() {
        text_of(&units.description.text).trim().to_string()
    } else {
        display.trim().to_string()
    }
}

/// A desired value's initial value: the variable's value when browsed, if it is of
/// the kind and within the bounds.
fn initial_value(
    kind: ValueKind,
    value: Option<&Variant>,
    bounds: Option<(f64, f64)>,
) -> Option<Value> {
    let value = value?;
    if kind == ValueKind::Bool {
        return match value {
            Variant::Boolean(on) => Some(Value::Bool(*on)),
            _ => None,
        };
    }
    let number = number_of(value)?;
    if let Some((low, high)) = bounds
        && !(low..=high).contains(&number)
    {
        return None;
    }
    match kind {
        ValueKind::Int => (number.fract() == 0.0
            && (i64::MIN as f64..i64::MAX as f64).contains(&number))
        .then_some(Value::Int(number as i64)),
        _ => Some(Value::Float(number)),
    }
}

/// The twin's value type of an OPC UA scalar type.
fn kind_of(scalar: ScalarType) -> ValueKind {
    match scalar {
        ScalarType::Boolean => ValueKind::Bool,
        ScalarType::Float | ScalarType::Double => ValueKind::Float,
        ScalarType::SByte
        | ScalarType::Byte
        | ScalarType::Int16
        | ScalarType::UInt16
        | ScalarType::Int32
        | ScalarType::UInt32
        | ScalarType::Int64
        | ScalarType::UInt64 => ValueKind::Int,
    }
}

/// Every value a scalar type can hold, as floats.
fn span_of(scalar: ScalarType) -> (f64, f64) {
    match scalar {
        ScalarType::Boolean => (0.0, 1.0),
        ScalarType::SByte => (f64::from(i8::MIN), f64::from(i8::MAX)),
        ScalarType::Byte => (f64::from(u8::MIN), f64::from(u8::MAX)),
        ScalarType::Int16 => (f64::from(i16::MIN), f64::from(i16::MAX)),
        ScalarType::UInt16 => (f64::from(u16::MIN), f64::from(u16::MAX)),
        ScalarType::Int32 => (f64::from(i32::MIN), f64::from(i32::MAX)),
        ScalarType::UInt32 => (f64::from(u32::MIN), f64::from(u32::MAX)),
        ScalarType::Int64 => (i64::MIN as f64, i64::MAX as f64),
        ScalarType::UInt64 => (0.0, u64::MAX as f64),
        ScalarType::Float => (-f64::from(f32::MAX), f64::from(f32::MAX)),
        ScalarType::Double => (-f64::MAX, f64::MAX),
    }
}

/// The bounds of a command parameter or desired value without an EURange: the span
/// of an integer type of 32 bits or fewer, which the connector could not convert a
/// value beyond; none for wider types, floats and Booleans.
fn integer_span(scalar: ScalarType) -> Option<(f64, f64)> {
    match scalar {
        ScalarType::SByte
        | ScalarType::Byte
        | ScalarType::Int16
        | ScalarType::UInt16
        | ScalarType::Int32
        | ScalarType::UInt32 => Some(span_of(scalar)),
        _ => None,
    }
}

/// The AccessLevel bits of an AccessLevel or UserAccessLevel read.
fn access_bits(value: &DataValue) -> Option<u8> {
    match value.value {
        Some(Variant::Byte(bits)) => Some(bits),
        _ => None,
    }
}

/// A node id's text form, if it reads back as the same node id: the mapping names
/// nodes by it.
fn node_text(node: &NodeId) -> Option<String> {
    let text = node.to_string();
    (NodeId::from_str(text.trim()).ok().as_ref() == Some(node)).then_some(text)
}

/// A data type's name (`String`, `Duration`), or its node id.
fn data_type_name(data_type: &NodeId) -> String {
    if data_type.namespace == 0
        && let Some(known) = data_type
            .as_u32()
            .and_then(|id| DataTypeId::try_from(id).ok())
    {
        return format!("{known:?}");
    }
    data_type.to_string()
}

/// `text`, or `fallback` when it is empty.
fn or_else(text: String, fallback: &str) -> String {
    if text.is_empty() {
        fallback.to_string()
    } else {
        text
    }
}

/// The asset path of a proposal given none: `plant/line/<type name>`.
fn placeholder_asset(type_name: &str) -> AssetPath {
    AssetPath::parse(&format!("plant/line/{type_name}"))
        .or_else(|_| AssetPath::parse("plant/line/machine"))
        .expect("plant/line/machine is a valid asset path")
}

#[cfg(test)]
mod tests {
    use opcua::types::{ExtensionObject, LocalizedText, StatusCode, VariantScalarTypeId};

    use super::*;

    fn value(variant: impl Into<Variant>) -> DataValue {
        DataValue::value_only(variant.into())
    }

    fn data_type(id: DataTypeId) -> DataValue {
        value(Variant::NodeId(Box::new(id.into())))
    }

    fn variable(id: DataTypeId, access: u8, current: Variant) -> VariableFacts {
        VariableFacts {
            data_type: data_type(id),
            value_rank: value(SCALAR),
            access_level: value(access),
            user_access_level: value(access),
            value: value(current),
            eu_range: None,
            engineering_units: None,
        }
    }

    fn arguments(arguments: Vec<Argument>) -> MethodFacts {
        let values: Vec<Variant> = arguments
            .into_iter()
            .map(|argument| Variant::from(ExtensionObject::from_message(argument)))
            .collect();
        MethodFacts {
            user_executable: value(true),
            input_arguments: Some(value(Variant::from((
                VariantScalarTypeId::ExtensionObject,
                values,
            )))),
        }
    }

    #[test]
    fn numeric_and_boolean_scalars_are_accepted_with_their_writability() {
        let read_only = variable(DataTypeId::Double, CURRENT_READ, Variant::Double(20.0));
        assert_eq!(
            accept_variable(&read_only),
            Ok(Accepted {
                scalar: ScalarType::Double,
                writable: false
            })
        );
        let writable = variable(
            DataTypeId::Boolean,
            CURRENT_READ | CURRENT_WRITE,
            Variant::Boolean(true),
        );
        assert_eq!(
            accept_variable(&writable),
            Ok(Accepted {
                scalar: ScalarType::Boolean,
                writable: true
            })
        );
        let mut user_may_not_write = writable.clone();
        user_may_not_write.user_access_level = value(CURRENT_READ);
        assert_eq!(
            accept_variable(&user_may_not_write).map(|a| a.writable),
            Ok(false)
        );
    }

    #[test]
    fn strings_arrays_and_unreadable_variables_are_skipped_with_the_reason() {
        let text = variable(DataTypeId::String, CURRENT_READ, Variant::from("idle"));
        assert_eq!(
            accept_variable(&text),
            Err(SkipReason::NotNumeric {
                data_type: "String".to_string()
            })
        );
        let mut array = variable(DataTypeId::Double, CURRENT_READ, Variant::Double(1.0));
        array.value_rank = value(1i32);
        assert_eq!(
            accept_variable(&array),
            Err(SkipReason::NotScalar { value_rank: 1 })
        );
        let mut any_rank = variable(
            DataTypeId::Double,
            CURRENT_READ,
            Variant::from((VariantScalarTypeId::Double, vec![1.0f64, 2.0])),
        );
        any_rank.value_rank = value(-2i32);
        assert!(matches!(
            accept_variable(&any_rank),
            Err(SkipReason::NotScalar { value_rank: -2 })
        ));
        let hidden = variable(DataTypeId::Double, 0, Variant::Double(1.0));
        assert_eq!(accept_variable(&hidden), Err(SkipReason::NotReadable));
        let mut unknown = variable(DataTypeId::Double, CURRENT_READ, Variant::Double(1.0));
        unknown.data_type = DataValue {
            status: Some(StatusCode::BadNodeIdUnknown),
            ..Default::default()
        };
        assert!(matches!(
            accept_variable(&unknown),
            Err(SkipReason::Unreadable { what, .. }) if what == "DataType"
        ));
    }

    #[test]
    fn method_arguments_become_typed_parameters_or_a_reason() {
        let ramp = arguments(vec![("rpm", DataTypeId::Float).into()]);
        assert_eq!(
            accept_method(&ramp),
            Ok(vec![("rpm".to_string(), ScalarType::Float)])
        );
        let stop = MethodFacts {
            user_executable: value(true),
            input_arguments: None,
        };
        assert_eq!(accept_method(&stop), Ok(Vec::new()));
        let named = arguments(vec![
            ("rpm", DataTypeId::Double).into(),
            ("recipe", DataTypeId::String).into(),
        ]);
        assert_eq!(
            accept_method(&named),
            Err(SkipReason::UnsupportedArgument {
                argument: "recipe".to_string(),
                data_type: "String".to_string()
            })
        );
        let mut listed: Argument = ("points", DataTypeId::Double).into();
        listed.value_rank = 1;
        assert_eq!(
            accept_method(&arguments(vec![listed])),
            Err(SkipReason::ArrayArgument {
                argument: "points".to_string()
            })
        );
        let forbidden = MethodFacts {
            user_executable: value(false),
            input_arguments: None,
        };
        assert_eq!(accept_method(&forbidden), Err(SkipReason::NotExecutable));
    }

    #[test]
    fn ranges_and_units_come_from_the_properties() {
        let range = value(ExtensionObject::from_message(Range {
            low: -20.0,
            high: 250.0,
        }));
        assert_eq!(eu_range(Some(&range)), Some((-20.0, 250.0)));
        assert_eq!(
            channel_range(ScalarType::Double, Some((-20.0, 250.0))),
            ((-20.0, 250.0), RangeSource::EuRange)
        );
        assert_eq!(
            channel_range(ScalarType::Byte, None),
            ((0.0, 255.0), RangeSource::DataType)
        );
        assert!(matches!(
            channel_range(ScalarType::Double, Some((5.0, 5.0))),
            ((low, high), RangeSource::UnusableEuRange { .. }) if low == -f64::MAX && high == f64::MAX
        ));
        let units = value(ExtensionObject::from_message(EUInformation {
            namespace_uri: "http://www.opcfoundation.org/UA/units/un/cefact".into(),
            unit_id: 4_408_652,
            display_name: LocalizedText::new("", "°C"),
            description: LocalizedText::new("", "degree Celsius"),
        }));
        assert_eq!(unit_of(Some(&units)), "°C");
        assert_eq!(unit_of(None), "");
    }

    #[test]
    fn initial_values_keep_their_kind_and_bounds() {
        assert_eq!(
            initial_value(
                ValueKind::Float,
                Some(&Variant::Double(1200.0)),
                Some((0.0, 3000.0))
            ),
            Some(Value::Float(1200.0))
        );
        assert_eq!(
            initial_value(
                ValueKind::Float,
                Some(&Variant::Double(3500.0)),
                Some((0.0, 3000.0))
            ),
            None
        );
        assert_eq!(
            initial_value(ValueKind::Int, Some(&Variant::UInt16(7)), None),
            Some(Value::Int(7))
        );
        assert_eq!(
            initial_value(ValueKind::Bool, Some(&Variant::Boolean(true)), None),
            Some(Value::Bool(true))
        );
        assert_eq!(initial_value(ValueKind::Float, None, None), None);
    }

    #[test]
    fn node_ids_that_do_not_read_back_are_refused() {
        assert_eq!(
            node_text(&NodeId::new(2, "Press1.Temperature")).as_deref(),
            Some("ns=2;s=Press1.Temperature")
        );
        assert_eq!(node_text(&NodeId::new(0, 85u32)).as_deref(), Some("i=85"));
        assert_eq!(node_text(&NodeId::new(2, " padded ")), None);
        assert_eq!(node_text(&NodeId::new(2, "two\nlines")), None);
    }

    #[test]
    fn a_proposal_without_an_asset_gets_a_placeholder() {
        assert_eq!(placeholder_asset("press").as_str(), "plant/line/press");
    }
}
