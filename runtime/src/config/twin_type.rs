//! Twin types: the declared schema of a kind of asset.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, LineStarts, read_file};
use crate::sample::ChannelId;
use crate::value::{Value, ValueKind};

/// A telemetry channel of a twin type.
#[derive(Debug, Clone)]
pub struct ChannelSpec {
    /// Channel name, unique within the type.
    pub name: String,
    /// Engineering unit (`degC`, `mm/s`, `kW`, …).
    pub unit: String,
    /// Plausible range; a sample outside it is rejected as implausible.
    pub range: (f64, f64),
    /// How long its value stays fresh without a newer reading (`max_age_secs`); `None`
    /// takes the node's default, zero never goes stale.
    pub max_age: Option<Duration>,
}

/// A desired value (a setpoint or mode the twin asks the machine to hold).
#[derive(Debug, Clone)]
pub struct DesiredSpec {
    /// Name, unique within the type.
    pub name: String,
    /// Value type.
    pub kind: ValueKind,
    /// Engineering unit.
    pub unit: String,
    /// Allowed range for numeric values.
    pub range: Option<(f64, f64)>,
    /// Value before any command sets it.
    pub initial: Value,
    /// The channel on which the machine reports this value back, if any.
    pub reported: Option<ChannelId>,
    /// Largest difference between the reported and the desired value that still counts
    /// as agreement (0 for exact).
    pub tolerance: f64,
}

impl DesiredSpec {
    /// Whether a reported reading agrees with desired value `value` within the tolerance.
    pub fn agrees(&self, value: Value, reported: f64) -> bool {
        (reported - value.as_f64()).abs() <= self.tolerance
    }
}

/// A typed, bounded command parameter.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    /// Parameter name.
    pub name: String,
    /// Value type.
    pub kind: ValueKind,
    /// Inclusive bounds for numeric parameters.
    pub range: Option<(f64, f64)>,
    /// Engineering unit.
    pub unit: String,
}

/// Where a command takes the value it writes into a desired value.
#[derive(Debug, Clone, PartialEq)]
pub enum SetSource {
    /// The value of a named parameter.
    Param(String),
    /// A fixed value.
    Const(Value),
}

/// A command a twin type accepts.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Command name.
    pub name: String,
    /// Parameters, all required.
    pub params: Vec<ParamSpec>,
    /// Desired values the command writes, in order.
    pub sets: Vec<(String, SetSource)>,
    /// Whether applying it clears latched trips (a reset). Governors may deny it while
    /// the tripping condition persists.
    pub clears_trips: bool,
}

/// A model or governor declared on a type: its kind, an optional instance name and
/// its parameters, handed to the matching factory.
#[derive(Debug, Clone)]
pub struct ComponentSpec {
    /// The factory to build it with (`ewma_anomaly`, `trip`, or a user's own kind).
    pub kind: String,
    /// Instance name (defaults to the kind).
    pub name: String,
    /// Run states in which the alarms this model raises are suppressed by design
    /// (`suppress_when = ["stopped", "tripped"]`; models only).
    pub suppress_when: Vec<crate::twin::RunState>,
    /// Remaining parameters, as written.
    pub params: toml::Table,
    /// Where it was declared, for error messages.
    pub origin: String,
    /// 1-based line of the declaration.
    pub line: Option<usize>,
}

impl ComponentSpec {
    /// Deserializes the parameters into the component's own config type.
    pub fn params<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::Value::Table(self.params.clone())
            .try_into()
            .map_err(|error: toml::de::Error| self.error(error.message().trim().to_string()))
    }

    /// A configuration error located at this component.
    pub fn error(&self, message: impl std::fmt::Display) -> ConfigError {
        ConfigError::at(
            &self.origin,
            self.line,
            format!("{} `{}`: {message}", self.kind, self.name),
        )
    }
}

/// Which channels feed line and plant aggregates.
#[derive(Debug, Clone, Default)]
pub struct Aggregates {
    /// Channel that reports throughput (parts per minute, m³/h, …).
    pub throughput: Option<ChannelId>,
    /// Channel that reports electrical power in kW; integrated into energy.
    pub power: Option<ChannelId>,
}

/// A declared twin type, validated and indexed.
#[derive(Debug, Clone)]
pub struct TwinType {
    /// Type name.
    pub name: String,
    /// Human description.
    pub description: String,
    /// Telemetry channels, indexed by [`ChannelId`].
    pub channels: Vec<ChannelSpec>,
    /// Static properties (manufacturer, rated power, …).
    pub properties: BTreeMap<String, toml::Value>,
    /// Desired values.
    pub desired: Vec<DesiredSpec>,
    /// Commands by name.
    pub commands: BTreeMap<String, CommandSpec>,
    /// Models the type runs.
    pub models: Vec<ComponentSpec>,
    /// Governors the type runs, in review order.
    pub governors: Vec<ComponentSpec>,
    /// Channels feeding aggregates.
    pub aggregates: Aggregates,
    /// Channels to show first in compact views.
    pub key_channels: Vec<ChannelId>,
    /// What a recommendation for a twin of this type seeks, if the type declares it.
    pub recommend: Option<crate::model::recommend::RecommendSpec>,
    channel_index: HashMap<String, ChannelId>,
}

impl TwinType {
    /// Looks a channel up by name.
    pub fn channel(&self, name: &str) -> Option<ChannelId> {
        self.channel_index.get(name).copied()
    }

    /// The spec of a channel.
    pub fn channel_spec(&self, id: ChannelId) -> Option<&ChannelSpec> {
        self.channels.get(id.0 as usize)
    }

    /// Looks a desired value up by name, with its index.
    pub fn desired(&self, name: &str) -> Option<(usize, &DesiredSpec)> {
        self.desired
            .iter()
            .enumerate()
            .find(|(_, d)| d.name == name)
    }
}

/// A set of twin types, by name.
#[derive(Debug, Clone, Default)]
pub struct TwinTypes {
    types: BTreeMap<String, Arc<TwinType>>,
}

impl TwinTypes {
    /// Loads twin types from a TOML file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let (origin, source) = read_file(path.as_ref())?;
        Self::from_toml(&source, &origin)
    }

    /// Parses twin types from TOML text; `origin` names it in errors.
    pub fn from_toml(source: &str, origin: &str) -> Result<Self, ConfigError> {
        let raw: RawTypesFile =
            toml::from_str(source).map_err(|e| ConfigError::from_toml(origin, source, &e))?;
        let lines = LineStarts::new(source);
        let mut types = BTreeMap::new();
        for (name, raw_type) in raw.types {
            let line = Some(lines.line(raw_type.span().start));
            let twin_type = compile_type(&name, raw_type.into_inner(), &lines, origin, line)?;
            types.insert(name, Arc::new(twin_type));
        }
        Ok(Self { types })
    }

    /// Adds every type of `other`; a name declared twice is an error.
    pub fn merge(&mut self, other: TwinTypes) -> Result<(), ConfigError> {
        for (name, twin_type) in other.types {
            if self.types.contains_key(&name) {
                return Err(ConfigError::at(
                    "twin types",
                    None,
                    format!("type `{name}` is declared twice"),
                ));
            }
            self.types.insert(name, twin_type);
        }
        Ok(())
    }

    /// Looks a type up by name.
    pub fn get(&self, name: &str) -> Option<&Arc<TwinType>> {
        self.types.get(name)
    }

    /// All types, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TwinType>> {
        self.types.values()
    }

    /// Number of types.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// True when no type is declared.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTypesFile {
    #[serde(default)]
    types: BTreeMap<String, Spanned<RawTwinType>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTwinType {
    #[serde(default)]
    description: String,
    #[serde(default)]
    channels: BTreeMap<String, Spanned<RawChannel>>,
    #[serde(default)]
    properties: BTreeMap<String, toml::Value>,
    #[serde(default)]
    desired: BTreeMap<String, Spanned<RawDesired>>,
    #[serde(default)]
    commands: BTreeMap<String, Spanned<RawCommand>>,
    #[serde(default)]
    models: Vec<Spanned<RawComponent>>,
    #[serde(default)]
    governors: Vec<Spanned<RawComponent>>,
    #[serde(default)]
    aggregates: RawAggregates,
    #[serde(default)]
    key_channels: Vec<String>,
    recommend: Option<Spanned<crate::model::recommend::RawRecommend>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    #[serde(default)]
    unit: String,
    range: [f64; 2],
    max_age_secs: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDesired {
    #[serde(rename = "type", default = "float_kind")]
    kind: ValueKind,
    #[serde(default)]
    unit: String,
    range: Option<[f64; 2]>,
    initial: Option<Value>,
    reported: Option<String>,
    tolerance: Option<f64>,
}

fn float_kind() -> ValueKind {
    ValueKind::Float
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawParam {
    #[serde(rename = "type", default = "float_kind")]
    kind: ValueKind,
    min: Option<f64>,
    max: Option<f64>,
    #[serde(default)]
    unit: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    #[serde(default)]
    params: BTreeMap<String, RawParam>,
    #[serde(default)]
    sets: BTreeMap<String, toml::Value>,
    #[serde(default)]
    clears_trips: bool,
}

#[derive(Deserialize)]
struct RawComponent {
    kind: String,
    name: Option<String>,
    #[serde(default)]
    suppress_when: Vec<crate::twin::RunState>,
    #[serde(flatten)]
    params: toml::Table,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAggregates {
    throughput: Option<String>,
    power: Option<String>,
}

fn compile_type(
    name: &str,
    raw: RawTwinType,
    lines: &LineStarts,
    origin: &str,
    type_line: Option<usize>,
) -> Result<TwinType, ConfigError> {
    let at = |span: std::ops::Range<usize>, message: String| {
        ConfigError::at(
            origin,
            Some(lines.line(span.start)),
            format!("type `{name}`: {message}"),
        )
    };
    if raw.channels.len() > u16::MAX as usize {
        return Err(ConfigError::at(
            origin,
            type_line,
            format!("type `{name}` has too many channels"),
        ));
    }
    let mut channels = Vec::with_capacity(raw.channels.len());
    let mut channel_index = HashMap::new();
    for (channel_name, spanned) in raw.channels {
        let span = spanned.span();
        let raw_channel = spanned.into_inner();
        let [low, high] = raw_channel.range;
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(at(
                span,
                format!("channel `{channel_name}`: range must be two finite numbers, low < high"),
            ));
        }
        let max_age = match raw_channel.max_age_secs {
            None => None,
            Some(secs) => match Duration::try_from_secs_f64(secs) {
                Ok(max_age) => Some(max_age),
                Err(_) => {
                    return Err(at(
                        span,
                        format!(
                            "channel `{channel_name}`: max_age_secs must be a number of seconds, 0 or more (0: never stale)"
                        ),
                    ));
                }
            },
        };
        channel_index.insert(channel_name.clone(), ChannelId(channels.len() as u16));
        channels.push(ChannelSpec {
            name: channel_name,
            unit: raw_channel.unit,
            range: (low, high),
            max_age,
        });
    }

    let mut desired = Vec::new();
    for (desired_name, spanned) in raw.desired {
        let span = spanned.span();
        let raw_desired = spanned.into_inner();
        let range = match raw_desired.range {
            Some([low, high]) if low.is_finite() && high.is_finite() && low <= high => {
                Some((low, high))
            }
            Some(_) => {
                return Err(at(
                    span,
                    format!("desired `{desired_name}`: range must be finite, low <= high"),
                ));
            }
            None => None,
        };
        let initial = match raw_desired.initial {
            Some(value) => value.coerce(raw_desired.kind).ok_or_else(|| {
                at(
                    span.clone(),
                    format!(
                        "desired `{desired_name}`: initial value {value} is not a {:?}",
                        raw_desired.kind
                    ),
                )
            })?,
            None => Value::from_f64(raw_desired.kind, range.map(|r| r.0).unwrap_or(0.0)),
        };
        let reported = match &raw_desired.reported {
            Some(channel) => Some(*channel_index.get(channel).ok_or_else(|| {
                at(
                    span.clone(),
                    format!("desired `{desired_name}`: reported on unknown channel `{channel}`"),
                )
            })?),
            None => None,
        };
        let tolerance = raw_desired.tolerance.unwrap_or(0.0);
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(at(
                span,
                format!("desired `{desired_name}`: tolerance must be a finite number >= 0"),
            ));
        }
        if raw_desired.tolerance.is_some() && reported.is_none() {
            return Err(at(
                span,
                format!(
                    "desired `{desired_name}`: a tolerance needs `reported`, the channel it is compared with"
                ),
            ));
        }
        desired.push(DesiredSpec {
            name: desired_name,
            kind: raw_desired.kind,
            unit: raw_desired.unit,
            range,
            initial,
            reported,
            tolerance,
        });
    }

    let mut commands = BTreeMap::new();
    for (command_name, spanned) in raw.commands {
        let span = spanned.span();
        let raw_command = spanned.into_inner();
        let mut params = Vec::new();
        for (param_name, raw_param) in raw_command.params {
            let range = match (raw_param.min, raw_param.max) {
                (Some(low), Some(high)) if low <= high => Some((low, high)),
                (None, None) => None,
                (Some(low), None) => Some((low, f64::MAX)),
                (None, Some(high)) => Some((f64::MIN, high)),
                _ => {
                    return Err(at(
                        span,
                        format!("command `{command_name}`: parameter `{param_name}` has min > max"),
                    ));
                }
            };
            params.push(ParamSpec {
                name: param_name,
                kind: raw_param.kind,
                range,
                unit: raw_param.unit,
            });
        }
        let mut sets = Vec::new();
        for (target, source_value) in raw_command.sets {
            let Some(desired_spec) = desired.iter().find(|d| d.name == target) else {
                return Err(at(
                    span,
                    format!("command `{command_name}` sets unknown desired value `{target}`"),
                ));
            };
            let set_source = match source_value {
                toml::Value::String(param) => {
                    let Some(param_spec) = params.iter().find(|p| p.name == param) else {
                        return Err(at(
                            span,
                            format!(
                                "command `{command_name}`: `{target}` takes unknown parameter `{param}`"
                            ),
                        ));
                    };
                    if param_spec.kind != desired_spec.kind
                        && !(param_spec.kind == ValueKind::Int
                            && desired_spec.kind == ValueKind::Float)
                    {
                        return Err(at(
                            span,
                            format!(
                                "command `{command_name}`: parameter `{param}` is {:?} but `{target}` is {:?}",
                                param_spec.kind, desired_spec.kind
                            ),
                        ));
                    }
                    SetSource::Param(param)
                }
                toml::Value::Boolean(b) => SetSource::Const(Value::Bool(b)),
                toml::Value::Integer(i) => SetSource::Const(Value::Int(i)),
                toml::Value::Float(f) => SetSource::Const(Value::Float(f)),
                other => {
                    return Err(at(
                        span,
                        format!("command `{command_name}`: cannot set `{target}` from {other}"),
                    ));
                }
            };
            if let SetSource::Const(value) = &set_source {
                let coerced = value.coerce(desired_spec.kind).ok_or_else(|| {
                    at(
                        span.clone(),
                        format!(
                            "command `{command_name}`: {value} is not a {:?} for `{target}`",
                            desired_spec.kind
                        ),
                    )
                })?;
                sets.push((target, SetSource::Const(coerced)));
            } else {
                sets.push((target, set_source));
            }
        }
        commands.insert(
            command_name.clone(),
            CommandSpec {
                name: command_name,
                params,
                sets,
                clears_trips: raw_command.clears_trips,
            },
        );
    }

    let recommend = match raw.recommend {
        Some(spanned) => {
            let span = spanned.span();
            let spec = (spanned.into_inner().into_spec())
                .map_err(|problem| at(span.clone(), format!("recommend: {problem}")))?;
            let numeric = commands
                .get(&spec.command)
                .and_then(|command| command.params.iter().find(|p| p.name == spec.param))
                .is_some_and(|param| matches!(param.kind, ValueKind::Float | ValueKind::Int));
            if !numeric {
                return Err(at(
                    span,
                    format!(
                        "recommend: command `{}` has no numeric parameter `{}`",
                        spec.command, spec.param
                    ),
                ));
            }
            Some(spec)
        }
        None => None,
    };

    let component = |spanned: Spanned<RawComponent>| {
        let line = Some(lines.line(spanned.span().start));
        let raw_component = spanned.into_inner();
        ComponentSpec {
            name: raw_component
                .name
                .unwrap_or_else(|| raw_component.kind.clone()),
            kind: raw_component.kind,
            suppress_when: raw_component.suppress_when,
            params: raw_component.params,
            origin: format!("{origin} (type `{name}`)"),
            line,
        }
    };
    let models: Vec<ComponentSpec> = raw.models.into_iter().map(component).collect();
    let governors: Vec<ComponentSpec> = raw.governors.into_iter().map(component).collect();
    if let Some(governor) = governors.iter().find(|g| !g.suppress_when.is_empty()) {
        return Err(governor.error(
            "suppress_when applies to the alarms of models; a governor's trip stays in view",
        ));
    }

    let lookup =
        |channel_name: &Option<String>, what: &str| -> Result<Option<ChannelId>, ConfigError> {
            match channel_name {
                None => Ok(None),
                Some(n) => channel_index.get(n).copied().map(Some).ok_or_else(|| {
                    ConfigError::at(
                        origin,
                        type_line,
                        format!("type `{name}`: {what} channel `{n}` is not declared"),
                    )
                }),
            }
        };
    let aggregates = Aggregates {
        throughput: lookup(&raw.aggregates.throughput, "throughput")?,
        power: lookup(&raw.aggregates.power, "power")?,
    };
    let key_channels = raw
        .key_channels
        .iter()
        .map(|n| lookup(&Some(n.clone()), "key").map(|id| id.expect("some")))
        .collect::<Result<Vec<_>, _>>()?;

    Ok(TwinType {
        name: name.to_string(),
        description: raw.description,
        channels,
        properties: raw.properties,
        desired,
        commands,
        models,
        governors,
        aggregates,
        key_channels,
        recommend,
        channel_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test press with one model.
    fn press() -> String {
        format!(
            "{}\n[[types.press.models]]\nkind = \"ewma_anomaly\"\nchannel = \"vibration\"\n",
            doppel_testkit::twin_types::PRESS_BASE
        )
    }

    /// The 1-based line of `text` on which `needle` starts.
    fn line_of(text: &str, needle: &str) -> usize {
        let at = text.find(needle).expect("the needle is in the text");
        text[..at].lines().count() + usize::from(text[..at].ends_with('\n'))
    }

    #[test]
    fn parses_a_type() {
        let types = TwinTypes::from_toml(&press(), "types.toml").unwrap();
        let press = types.get("press").unwrap();
        assert_eq!(press.channels.len(), 5);
        let vibration = press.channel("vibration").unwrap();
        assert_eq!(press.channels[usize::from(vibration.0)].name, "vibration");
        assert_eq!(
            press.desired("speed").unwrap().1.initial,
            Value::Float(1200.0)
        );
        assert_eq!(
            press.commands["stop"].sets,
            vec![("running".to_string(), SetSource::Const(Value::Bool(false)))]
        );
        assert_eq!(press.models[0].kind, "ewma_anomaly");
        assert_eq!(
            press.models[0].params["channel"].as_str(),
            Some("vibration")
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let press = press();
        let vibration_table = "[types.press.channels.vibration]";
        let broken = press.replace(
            &format!("{vibration_table}\nunit = \"mm/s\"\nrange = [0.0, 50.0]"),
            &format!("{vibration_table}\nunit = \"mm/s\"\nrange = [50.0, 0.0]"),
        );
        let error = TwinTypes::from_toml(&broken, "types.toml").unwrap_err();
        assert_eq!(error.origin, "types.toml");
        assert_eq!(
            error.line,
            Some(line_of(&broken, vibration_table)),
            "{error}"
        );
        assert!(error.to_string().contains("channel `vibration`"), "{error}");

        let typo = press.replace("unit = \"rpm\"\nrange", "unti = \"rpm\"\nrange");
        let line = line_of(&typo, "unti");
        let error = TwinTypes::from_toml(&typo, "types.toml").unwrap_err();
        assert_eq!(error.line, Some(line), "{error}");
        assert!(
            error
                .to_string()
                .starts_with(&format!("types.toml:{line}: ")),
            "{error}"
        );

        let bad_set = press.replace("sets = { speed = \"rpm\" }", "sets = { sped = \"rpm\" }");
        let error = TwinTypes::from_toml(&bad_set, "types.toml").unwrap_err();
        assert!(
            error.to_string().contains("unknown desired value `sped`"),
            "{error}"
        );
    }
}
