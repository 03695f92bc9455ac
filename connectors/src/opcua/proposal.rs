//! What `doppel opcua browse` proposes for the nodes it found on a server: channels,
//! desired values and commands, rendered as the twin type TOML and the `[[opcua]]`
//! mapping TOML that use them, and every node left out with the reason.
//!
//! Both texts are meant to be used as they are: the type is read by
//! `TwinTypes::from_toml`, the mapping by [`OpcUaConfig::from_toml`], and the mapping
//! names only the channels, desired values, commands and parameters the type declares.
//! Names are the browse names in lower snake case, nested objects prefixed by their
//! names below the root: `hydraulics_pressure`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use doppel_runtime::config::toml_text::{comment, float, key, string as quoted};
use doppel_runtime::{AssetPath, Value, ValueKind};

use super::config::{OpcUaConfig, ScalarType};
use crate::delivery::Resend;

/// How many node ids of nodes below the depth limit a [`Cut`] keeps, for the report.
const CUT_EXAMPLES: usize = 5;

/// A variable proposed as a telemetry channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedChannel {
    /// The channel's name in the twin type.
    pub name: String,
    /// The variable's node id (`ns=2;s=Press1.Temperature`).
    pub node: String,
    /// The variable's data type.
    pub data_type: ScalarType,
    /// The display name of the variable's `EngineeringUnits`; empty without them.
    pub unit: String,
    /// The channel's plausible range.
    pub range: (f64, f64),
    /// Where the range comes from.
    pub range_source: RangeSource,
}

/// Where a proposed channel's range comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RangeSource {
    /// The variable's `EURange` property.
    EuRange,
    /// The variable has no `EURange`: the whole span of its data type.
    DataType,
    /// The variable's `EURange` is not two finite numbers with low < high: the whole
    /// span of its data type.
    UnusableEuRange {
        /// The range's low end, as the server has it.
        low: f64,
        /// The range's high end, as the server has it.
        high: f64,
    },
}

impl fmt::Display for RangeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RangeSource::EuRange => f.write_str("from EURange"),
            RangeSource::DataType => f.write_str("the data type's span (no EURange)"),
            RangeSource::UnusableEuRange { low, high } => {
                write!(
                    f,
                    "the data type's span (EURange [{low}, {high}] is unusable)"
                )
            }
        }
    }
}

/// A proposed desired value: a writable variable, or the value a method argument
/// carries.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedDesired {
    /// The desired value's name in the twin type.
    pub name: String,
    /// Its value type.
    pub kind: ValueKind,
    /// Its engineering unit; empty when unknown.
    pub unit: String,
    /// Its allowed range, when known.
    pub range: Option<(f64, f64)>,
    /// Its value before any command sets it: the variable's value when browsed.
    pub initial: Option<Value>,
    /// The channel the machine reports it back on.
    pub reported: Option<String>,
    /// The variable it is written to (`writes`), as a node id.
    pub written_to: Option<String>,
}

/// A typed parameter of a proposed command, and the desired value it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedParam {
    /// The parameter's name.
    pub name: String,
    /// Its value type.
    pub kind: ValueKind,
    /// Its inclusive bounds, when known.
    pub range: Option<(f64, f64)>,
    /// Its engineering unit; empty when unknown.
    pub unit: String,
    /// The desired value it sets.
    pub sets: String,
    /// The OPC UA type it goes to the server as.
    pub data_type: ScalarType,
}

/// A proposed command: it sets a writable variable's desired value, or calls a method.
#[derive(Debug, Clone, PartialEq)]
pub struct ProposedCommand {
    /// The command's name in the twin type.
    pub name: String,
    /// Its parameters, in the method's argument order.
    pub params: Vec<ProposedParam>,
    /// A desired value it sets to a constant, and the constant: a method without
    /// arguments is called for a command that sets a value, so such a command records
    /// the request (`stop_requested = true`).
    pub sets_const: Option<(String, Value)>,
    /// The method it calls.
    pub calls: Option<ProposedCall>,
}

/// The method a proposed command calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedCall {
    /// The node id of the object that owns the method.
    pub object: String,
    /// The method's node id.
    pub method: String,
}

/// A node found on the walk and left out of the proposal.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    /// Its node id (`ns=2;s=Press1.Mode`).
    pub node: String,
    /// Its browse names from the root, joined with `/`.
    pub path: String,
    /// Why it is left out.
    pub reason: SkipReason,
}

/// Why a node found on the walk is not in the proposal.
#[derive(Debug, Clone, PartialEq)]
pub enum SkipReason {
    /// The variable's data type is not a number or Boolean (a string, a date, a
    /// structure, an enumeration of another namespace).
    NotNumeric {
        /// The data type's name (`String`), or its node id.
        data_type: String,
    },
    /// The variable holds an array.
    NotScalar {
        /// The variable's ValueRank.
        value_rank: i32,
    },
    /// The session's user may not read the variable.
    NotReadable,
    /// An attribute or property the proposal needs could not be read.
    Unreadable {
        /// What could not be read (`DataType`, `InputArguments`).
        what: String,
        /// The status the server answered.
        status: String,
    },
    /// A method input argument is not a number or Boolean.
    UnsupportedArgument {
        /// The argument's name.
        argument: String,
        /// Its data type's name, or its node id.
        data_type: String,
    },
    /// A method input argument is an array.
    ArrayArgument {
        /// The argument's name.
        argument: String,
    },
    /// The method's `InputArguments` property does not hold `Argument` structures.
    UndecodableArguments,
    /// The session's user may not call the method.
    NotExecutable,
    /// A node below a method that is not one of its properties.
    UnderMethod,
    /// The node belongs to another server.
    OtherServer,
    /// The server's own object (`i=2253`): diagnostics and capabilities, not the
    /// machine. It is not walked.
    ServerObject,
    /// Browsing the node failed.
    Unbrowsable {
        /// The status the server answered.
        status: String,
    },
    /// The node id does not read back the same from its text form, so a mapping could
    /// not name it.
    NodeIdText,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotNumeric { data_type } => {
                write!(f, "data type {data_type} is not a number or Boolean")
            }
            SkipReason::NotScalar { value_rank } => {
                write!(f, "an array (value rank {value_rank})")
            }
            SkipReason::NotReadable => f.write_str("not readable by this session's user"),
            SkipReason::Unreadable { what, status } => {
                write!(f, "reading its {what} failed: {status}")
            }
            SkipReason::UnsupportedArgument {
                argument,
                data_type,
            } => write!(
                f,
                "input argument `{argument}` is a {data_type}, not a number or Boolean"
            ),
            SkipReason::ArrayArgument { argument } => {
                write!(f, "input argument `{argument}` is an array")
            }
            SkipReason::UndecodableArguments => {
                f.write_str("its InputArguments are not Argument structures")
            }
            SkipReason::NotExecutable => f.write_str("not executable by this session's user"),
            SkipReason::UnderMethod => f.write_str("below a method, and not one of its properties"),
            SkipReason::OtherServer => f.write_str("on another server"),
            SkipReason::ServerObject => {
                f.write_str("the server's own object (diagnostics and capabilities), not walked")
            }
            SkipReason::Unbrowsable { status } => write!(f, "browsing it failed: {status}"),
            SkipReason::NodeIdText => f.write_str(
                "its node id does not read back the same from its text form, so a mapping cannot name it",
            ),
        }
    }
}

/// How the walk's bounds cut it short.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cut {
    /// The depth limit in force: levels below the root.
    pub max_depth: usize,
    /// The node limit in force.
    pub max_nodes: usize,
    /// Nodes below the depth limit that were not followed.
    pub beyond_depth: usize,
    /// Node ids of the first of them.
    pub beyond_depth_examples: Vec<String>,
    /// References not followed because the node limit was reached.
    pub beyond_nodes: usize,
    /// Nodes whose references were not all read: they had more than the node limit.
    pub unfinished_listings: usize,
}

impl Cut {
    /// No cut yet, under these limits.
    pub fn new(max_depth: usize, max_nodes: usize) -> Self {
        Self {
            max_depth,
            max_nodes,
            ..Self::default()
        }
    }

    /// True when neither bound cut the walk.
    pub fn is_empty(&self) -> bool {
        self.beyond_depth == 0 && self.beyond_nodes == 0 && self.unfinished_listings == 0
    }

    /// Counts a node below the depth limit.
    pub(crate) fn note_beyond_depth(&mut self, node: String) {
        self.beyond_depth += 1;
        if self.beyond_depth_examples.len() < CUT_EXAMPLES {
            self.beyond_depth_examples.push(node);
        }
    }
}

impl fmt::Display for Cut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(
                f,
                "the walk is complete (depth limit {}, node limit {})",
                self.max_depth, self.max_nodes
            );
        }
        let mut cuts = Vec::new();
        if self.beyond_depth > 0 {
            cuts.push(format!(
                "the depth limit {} cut the walk: {} nodes below it were not followed ({}); raise --max-depth or browse from a deeper --root",
                self.max_depth,
                self.beyond_depth,
                self.beyond_depth_examples.join(", ")
            ));
        }
        if self.beyond_nodes > 0 {
            cuts.push(format!(
                "the node limit {} cut the walk: {} references were not followed; raise --max-nodes or browse from a narrower --root",
                self.max_nodes, self.beyond_nodes
            ));
        }
        if self.unfinished_listings > 0 {
            cuts.push(format!(
                "{} nodes have more references than the node limit {}; the rest of them were not read",
                self.unfinished_listings, self.max_nodes
            ));
        }
        f.write_str(&cuts.join("\n"))
    }
}

/// A proposed twin type and the mapping that feeds it from one server, with what was
/// left out: [`types_toml`](Self::types_toml) and [`mapping_toml`](Self::mapping_toml)
/// are meant to be used as they are.
#[derive(Debug, Clone)]
pub struct Proposal {
    /// The connector it was browsed with, its endpoint the one browsed.
    pub connector: OpcUaConfig,
    /// The root of the walk, as a node id.
    pub root: String,
    /// The root's browse name.
    pub root_name: String,
    /// The proposed twin type's name.
    pub type_name: String,
    /// The asset path of the mapping.
    pub asset: AssetPath,
    /// True when `asset` is a placeholder, not a path the caller gave.
    pub asset_is_placeholder: bool,
    /// The sampling interval of every proposed channel, in milliseconds.
    pub sampling_ms: u64,
    /// How many nodes the walk visited.
    pub nodes: usize,
    /// The proposed channels.
    pub channels: Vec<ProposedChannel>,
    /// The proposed desired values.
    pub desired: Vec<ProposedDesired>,
    /// The proposed commands.
    pub commands: Vec<ProposedCommand>,
    /// The nodes left out, and why.
    pub skipped: Vec<Skipped>,
    /// Properties of variables and methods the proposal does not use (`Definition`,
    /// `ValuePrecision`, `OutputArguments`…), by browse name, with how many there were.
    pub unused_properties: BTreeMap<String, usize>,
    /// How the walk's bounds cut it short.
    pub cut: Cut,
}

impl Proposal {
    /// The twin type, as a twin types file (`[types.<name>]`).
    pub fn types_toml(&self) -> String {
        let mut text = Text::default();
        let table = format!("types.{}", key(&self.type_name));
        text.line(&format!(
            "# Proposed by `doppel opcua browse` from {} ({}) on {}",
            comment(&self.root_name),
            comment(&self.root),
            comment(&self.connector.endpoint)
        ));
        text.line(&format!("[{table}]"));
        text.line(&format!(
            "description = {}",
            quoted(&format!(
                "{} ({}) on {}",
                self.root_name, self.root, self.connector.endpoint
            ))
        ));
        for channel in &self.channels {
            text.line("");
            text.line(&format!(
                "# {} ({}; range {})",
                comment(&channel.node),
                channel.data_type,
                channel.range_source
            ));
            text.line(&format!("[{table}.channels.{}]", key(&channel.name)));
            text.line(&format!("unit = {}", quoted(&channel.unit)));
            text.line(&format!(
                "range = [{}, {}]",
                float(channel.range.0),
                float(channel.range.1)
            ));
        }
        for desired in &self.desired {
            text.line("");
            text.line(&format!("[{table}.desired.{}]", key(&desired.name)));
            text.line(&format!("type = \"{}\"", kind_name(desired.kind)));
            if !desired.unit.is_empty() {
                text.line(&format!("unit = {}", quoted(&desired.unit)));
            }
            if let Some((low, high)) = desired.range {
                text.line(&format!("range = [{}, {}]", float(low), float(high)));
            }
            if let Some(initial) = desired.initial {
                text.line(&format!("initial = {}", value(initial)));
            }
            if let Some(channel) = &desired.reported {
                text.line(&format!("reported = {}", quoted(channel)));
            }
        }
        for command in &self.commands {
            text.line("");
            match (&command.calls, self.written_by(command)) {
                (Some(call), _) => text.line(&format!(
                    "# calls {} on {}",
                    comment(&call.method),
                    comment(&call.object)
                )),
                (None, Some(node)) => text.line(&format!("# writes {}", comment(node))),
                (None, None) => {}
            }
            text.line(&format!("[{table}.commands.{}]", key(&command.name)));
            for param in &command.params {
                text.line(&format!(
                    "params.{} = {}",
                    key(&param.name),
                    param_table(param)
                ));
            }
            let mut sets: Vec<String> = command
                .params
                .iter()
                .map(|param| format!("{} = {}", key(&param.sets), quoted(&param.name)))
                .collect();
            if let Some((desired, constant)) = &command.sets_const {
                sets.push(format!("{} = {}", key(desired), value(*constant)));
            }
            if !sets.is_empty() {
                text.line(&format!("sets = {{ {} }}", sets.join(", ")));
            }
        }
        text.0
    }

    /// The connector's `[[opcua]]` table with one `[[opcua.asset]]`: the proposed
    /// channels, writes and methods. The connector's password is never printed: a
    /// connector with a user gets a commented `password` line to fill in. Nodes left
    /// out follow as comments.
    pub fn mapping_toml(&self) -> String {
        let connector = &self.connector;
        let mut text = Text::default();
        text.line(&format!(
            "# Proposed by `doppel opcua browse` from {} ({}) for twin type `{}`",
            comment(&self.root_name),
            comment(&self.root),
            comment(&self.type_name)
        ));
        text.line("[[opcua]]");
        text.line(&format!("name = {}", quoted(&connector.name)));
        text.line(&format!("endpoint = {}", quoted(&connector.endpoint)));
        text.line(&format!(
            "security_policy = \"{}\"",
            connector.security_policy
        ));
        text.line(&format!("security_mode = \"{}\"", connector.security_mode));
        if connector.allow_insecure {
            text.line("allow_insecure = true");
        }
        if let Some(pki_dir) = &connector.pki_dir {
            text.line(&format!("pki_dir = {}", quoted(&pki_dir.to_string_lossy())));
        }
        if connector.trust_server_certificate {
            text.line("trust_server_certificate = true");
        }
        if let Some(user) = &connector.user {
            text.line(&format!("user = {}", quoted(user)));
            text.line(&format!(
                "# password = \"…\"  # the password of {}, as in the connector's config (not printed)",
                comment(user)
            ));
        }
        text.line(&format!(
            "reconnect = {{ initial_ms = {}, max_ms = {} }}",
            connector.reconnect.initial_ms, connector.reconnect.max_ms
        ));
        text.line(&format!("publishing_ms = {}", connector.publishing_ms));
        text.line(&format!(
            "request_timeout_ms = {}",
            connector.request_timeout_ms
        ));
        text.line(&format!("keep_alive_ms = {}", connector.keep_alive_ms));
        if connector.resend == Resend::Never {
            text.line("resend = \"never\"");
        }
        text.line("");
        text.line("[[opcua.asset]]");
        if self.asset_is_placeholder {
            text.line("# a placeholder: the machine's path in the plant file");
        }
        text.line(&format!("path = {}", quoted(self.asset.as_str())));
        let channels: Vec<String> = self
            .channels
            .iter()
            .map(|channel| {
                format!(
                    "{{ channel = {}, node = {}, sampling_ms = {} }}",
                    quoted(&channel.name),
                    quoted(&channel.node),
                    self.sampling_ms
                )
            })
            .collect();
        text.array("channels", &channels);
        let writes: Vec<String> = self
            .desired
            .iter()
            .filter_map(|desired| {
                let node = desired.written_to.as_ref()?;
                Some(format!(
                    "{{ desired = {}, node = {} }}",
                    quoted(&desired.name),
                    quoted(node)
                ))
            })
            .collect();
        text.array("writes", &writes);
        let methods: Vec<String> = self
            .commands
            .iter()
            .filter_map(|command| {
                let call = command.calls.as_ref()?;
                let mut entry = format!(
                    "{{ command = {}, object = {}, method = {}",
                    quoted(&command.name),
                    quoted(&call.object),
                    quoted(&call.method)
                );
                if !command.params.is_empty() {
                    let args: Vec<String> = command
                        .params
                        .iter()
                        .map(|param| {
                            format!(
                                "{{ param = {}, type = \"{}\" }}",
                                quoted(&param.name),
                                param.data_type
                            )
                        })
                        .collect();
                    entry.push_str(&format!(", args = [{}]", args.join(", ")));
                }
                entry.push_str(" }");
                Some(entry)
            })
            .collect();
        text.array("methods", &methods);
        if !self.skipped.is_empty() {
            text.line("");
            text.line("# Not proposed:");
            for skipped in &self.skipped {
                text.line(&format!(
                    "#   {} ({}): {}",
                    comment(&skipped.node),
                    comment(&skipped.path),
                    comment(&skipped.reason.to_string())
                ));
            }
        }
        text.0
    }

    /// What was proposed, what was left out and why, and how the bounds cut the walk:
    /// for a person, not a parser.
    pub fn report(&self) -> String {
        let mut text = Text::default();
        text.line(&format!(
            "browsed {} from {} ({}): {} nodes",
            self.connector.endpoint, self.root, self.root_name, self.nodes
        ));
        text.line(&format!(
            "proposed twin type `{}` for asset {}: {} channels, {} desired values, {} commands",
            self.type_name,
            self.asset,
            self.channels.len(),
            self.desired.len(),
            self.commands.len()
        ));
        if self.asset_is_placeholder {
            text.line("  the asset path is a placeholder: give the machine's path in the plant file with --asset");
        }
        for channel in &self.channels {
            let unit = if channel.unit.is_empty() {
                "no unit"
            } else {
                channel.unit.as_str()
            };
            text.line(&format!(
                "  channel {}  {}  {}  {}  [{}, {}] {}",
                channel.name,
                channel.node,
                channel.data_type,
                unit,
                channel.range.0,
                channel.range.1,
                channel.range_source
            ));
        }
        for command in &self.commands {
            let params: Vec<String> = command
                .params
                .iter()
                .map(|param| format!("{}: {}", param.name, param.data_type))
                .collect();
            let does = match (&command.calls, self.written_by(command)) {
                (Some(call), _) => format!("calls {}({})", call.method, params.join(", ")),
                (None, Some(node)) => format!("writes {node}"),
                (None, None) => "changes the twin only".to_string(),
            };
            text.line(&format!("  command {}  {does}", command.name));
        }
        if self.skipped.is_empty() {
            text.line("no node was left out");
        } else {
            text.line(&format!("left out {} nodes:", self.skipped.len()));
            for skipped in &self.skipped {
                text.line(&format!(
                    "  {} ({}): {}",
                    skipped.node, skipped.path, skipped.reason
                ));
            }
        }
        if !self.unused_properties.is_empty() {
            let unused: Vec<String> = self
                .unused_properties
                .iter()
                .map(|(name, count)| format!("{name} ({count})"))
                .collect();
            text.line(&format!("properties not used: {}", unused.join(", ")));
        }
        text.line(&self.cut.to_string());
        text.0
    }

    /// The variable `command` writes: the one its parameter's desired value is
    /// written to.
    fn written_by(&self, command: &ProposedCommand) -> Option<&str> {
        command.params.iter().find_map(|param| {
            self.desired
                .iter()
                .find(|desired| desired.name == param.sets)
                .and_then(|desired| desired.written_to.as_deref())
        })
    }
}

/// Hands out names, each once: a name already taken gets `_2`, `_3`… appended.
#[derive(Debug, Default)]
pub(crate) struct Names {
    taken: HashSet<String>,
}

impl Names {
    /// `wanted`, or the first free `wanted_<n>`; taken from now on.
    pub(crate) fn claim(&mut self, wanted: &str) -> String {
        let mut candidate = wanted.to_string();
        let mut suffix = 1;
        while !self.taken.insert(candidate.clone()) {
            suffix += 1;
            candidate = format!("{wanted}_{suffix}");
        }
        candidate
    }

    /// Takes `name` without handing it out.
    pub(crate) fn reserve(&mut self, name: &str) {
        self.taken.insert(name.to_string());
    }
}

/// `text` in lower snake case, ASCII letters and digits only: `MotorSpeed` →
/// `motor_speed`, `EURange` → `eu_range`, `Speed SP` → `speed_sp`. Empty when `text`
/// has no ASCII letter or digit.
pub(crate) fn snake_case(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut spaced = String::with_capacity(text.len() + 4);
    for (index, &c) in chars.iter().enumerate() {
        if !c.is_ascii_alphanumeric() {
            spaced.push('_');
            continue;
        }
        if c.is_ascii_uppercase() && index > 0 {
            let previous = chars[index - 1];
            let next_is_lower = chars
                .get(index + 1)
                .is_some_and(|next| next.is_ascii_lowercase());
            if previous.is_ascii_lowercase()
                || previous.is_ascii_digit()
                || (previous.is_ascii_uppercase() && next_is_lower)
            {
                spaced.push('_');
            }
        }
        spaced.push(c.to_ascii_lowercase());
    }
    spaced
        .split('_')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// `name` without its parent's name in front: `Press1.Temperature` below `Press1`
/// is `Temperature` (PLC exports often repeat the path in every browse name).
pub(crate) fn strip_parent<'a>(name: &'a str, parent: &str) -> &'a str {
    if parent.is_empty() {
        return name;
    }
    name.strip_prefix(parent)
        .and_then(|rest| rest.strip_prefix(['.', '_', '/', ':', ' ']))
        .filter(|rest| !rest.is_empty())
        .unwrap_or(name)
}

/// Lines of TOML.
#[derive(Default)]
struct Text(String);

impl Text {
    fn line(&mut self, line: &str) {
        self.0.push_str(line);
        self.0.push('\n');
    }

    /// `name = [ … ]`, one entry a line; nothing when there are none.
    fn array(&mut self, name: &str, entries: &[String]) {
        if entries.is_empty() {
            return;
        }
        self.line(&format!("{name} = ["));
        for entry in entries {
            self.line(&format!("    {entry},"));
        }
        self.line("]");
    }
}

/// A parameter's inline table: `{ type = "float", min = 0.0, max = 3000.0, unit = "rpm" }`.
fn param_table(param: &ProposedParam) -> String {
    let mut fields = vec![format!("type = \"{}\"", kind_name(param.kind))];
    if let Some((low, high)) = param.range {
        fields.push(format!("min = {}", float(low)));
        fields.push(format!("max = {}", float(high)));
    }
    if !param.unit.is_empty() {
        fields.push(format!("unit = {}", quoted(&param.unit)));
    }
    format!("{{ {} }}", fields.join(", "))
}

/// The name a twin type gives a value type.
fn kind_name(kind: ValueKind) -> &'static str {
    match kind {
        ValueKind::Float => "float",
        ValueKind::Int => "int",
        ValueKind::Bool => "bool",
    }
}

/// A value as a TOML value.
fn value(value: Value) -> String {
    match value {
        Value::Bool(on) => on.to_string(),
        Value::Int(integer) => integer.to_string(),
        Value::Float(number) => float(number),
    }
}

#[cfg(test)]
mod tests {
    use doppel_runtime::TwinTypes;
    use doppel_runtime::config::SetSource;

    use super::super::config::MethodArg;
    use super::*;

    fn connector() -> OpcUaConfig {
        OpcUaConfig::from_toml(
            "[[opcua]]\nname = \"press-line\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\ntrust_server_certificate = true\nuser = \"doppel\"\npassword = \"line-1-secret\"\n",
        )
        .unwrap()
        .remove(0)
    }

    /// What browsing a press finds: a temperature with units and a range, a vibration
    /// without either, a writable speed, a writable running flag, `Ramp(rpm: Float)`
    /// and `Stop()`.
    fn press() -> Proposal {
        let channel =
            |name: &str, node: &str, data_type, unit: &str, range, range_source| ProposedChannel {
                name: name.to_string(),
                node: node.to_string(),
                data_type,
                unit: unit.to_string(),
                range,
                range_source,
            };
        Proposal {
            connector: connector(),
            root: "ns=2;s=Press1".to_string(),
            root_name: "Press1".to_string(),
            type_name: "press".to_string(),
            asset: AssetPath::parse("acme/plant-a/line-1/press-1").unwrap(),
            asset_is_placeholder: false,
            sampling_ms: 100,
            nodes: 12,
            channels: vec![
                channel(
                    "temperature",
                    "ns=2;s=Press1.Temperature",
                    ScalarType::Double,
                    "°C",
                    (-20.0, 250.0),
                    RangeSource::EuRange,
                ),
                channel(
                    "vibration",
                    "ns=2;s=Press1.Vibration",
                    ScalarType::Double,
                    "",
                    (-f64::MAX, f64::MAX),
                    RangeSource::DataType,
                ),
                channel(
                    "speed",
                    "ns=2;s=Press1.Speed",
                    ScalarType::Double,
                    "rpm",
                    (0.0, 3000.0),
                    RangeSource::EuRange,
                ),
                channel(
                    "running",
                    "ns=2;s=Press1.Running",
                    ScalarType::Boolean,
                    "",
                    (0.0, 1.0),
                    RangeSource::DataType,
                ),
            ],
            desired: vec![
                ProposedDesired {
                    name: "speed".to_string(),
                    kind: ValueKind::Float,
                    unit: "rpm".to_string(),
                    range: Some((0.0, 3000.0)),
                    initial: Some(Value::Float(1200.0)),
                    reported: Some("speed".to_string()),
                    written_to: Some("ns=2;s=Press1.Speed".to_string()),
                },
                ProposedDesired {
                    name: "running".to_string(),
                    kind: ValueKind::Bool,
                    unit: String::new(),
                    range: None,
                    initial: Some(Value::Bool(true)),
                    reported: Some("running".to_string()),
                    written_to: Some("ns=2;s=Press1.Running".to_string()),
                },
                ProposedDesired {
                    name: "ramp_rpm".to_string(),
                    kind: ValueKind::Float,
                    unit: String::new(),
                    range: None,
                    initial: None,
                    reported: None,
                    written_to: None,
                },
                ProposedDesired {
                    name: "stop_requested".to_string(),
                    kind: ValueKind::Bool,
                    unit: String::new(),
                    range: None,
                    initial: Some(Value::Bool(false)),
                    reported: None,
                    written_to: None,
                },
            ],
            commands: vec![
                ProposedCommand {
                    name: "set_speed".to_string(),
                    params: vec![ProposedParam {
                        name: "value".to_string(),
                        kind: ValueKind::Float,
                        range: Some((0.0, 3000.0)),
                        unit: "rpm".to_string(),
                        sets: "speed".to_string(),
                        data_type: ScalarType::Double,
                    }],
                    sets_const: None,
                    calls: None,
                },
                ProposedCommand {
                    name: "set_running".to_string(),
                    params: vec![ProposedParam {
                        name: "value".to_string(),
                        kind: ValueKind::Bool,
                        range: None,
                        unit: String::new(),
                        sets: "running".to_string(),
                        data_type: ScalarType::Boolean,
                    }],
                    sets_const: None,
                    calls: None,
                },
                ProposedCommand {
                    name: "ramp".to_string(),
                    params: vec![ProposedParam {
                        name: "rpm".to_string(),
                        kind: ValueKind::Float,
                        range: None,
                        unit: String::new(),
                        sets: "ramp_rpm".to_string(),
                        data_type: ScalarType::Float,
                    }],
                    sets_const: None,
                    calls: Some(ProposedCall {
                        object: "ns=2;s=Press1".to_string(),
                        method: "ns=2;s=Press1.Ramp".to_string(),
                    }),
                },
                ProposedCommand {
                    name: "stop".to_string(),
                    params: Vec::new(),
                    sets_const: Some(("stop_requested".to_string(), Value::Bool(true))),
                    calls: Some(ProposedCall {
                        object: "ns=2;s=Press1".to_string(),
                        method: "ns=2;s=Press1.Stop".to_string(),
                    }),
                },
            ],
            skipped: vec![Skipped {
                node: "ns=2;s=Press1.Mode".to_string(),
                path: "Press1.Mode".to_string(),
                reason: SkipReason::NotNumeric {
                    data_type: "String".to_string(),
                },
            }],
            unused_properties: BTreeMap::from([("OutputArguments".to_string(), 1)]),
            cut: Cut::new(6, 5000),
        }
    }

    #[test]
    fn the_proposed_type_is_a_valid_twin_type() {
        let proposal = press();
        let text = proposal.types_toml();
        let types =
            TwinTypes::from_toml(&text, "proposed").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let press = types.get("press").unwrap();
        let temperature = press
            .channel_spec(press.channel("temperature").unwrap())
            .unwrap();
        assert_eq!(temperature.unit, "°C");
        assert_eq!(temperature.range, (-20.0, 250.0));
        let vibration = press
            .channel_spec(press.channel("vibration").unwrap())
            .unwrap();
        assert_eq!(vibration.range, (-f64::MAX, f64::MAX));
        let (_, speed) = press.desired("speed").unwrap();
        assert_eq!(speed.range, Some((0.0, 3000.0)));
        assert_eq!(speed.initial, Value::Float(1200.0));
        assert_eq!(speed.reported, press.channel("speed"));
        assert_eq!(press.desired("running").unwrap().1.kind, ValueKind::Bool);
        assert_eq!(
            press.commands["set_speed"].sets,
            vec![("speed".to_string(), SetSource::Param("value".to_string()))]
        );
        assert_eq!(
            press.commands["set_speed"].params[0].range,
            Some((0.0, 3000.0))
        );
        assert_eq!(
            press.commands["ramp"].sets,
            vec![("ramp_rpm".to_string(), SetSource::Param("rpm".to_string()))]
        );
        assert_eq!(
            press.commands["stop"].sets,
            vec![(
                "stop_requested".to_string(),
                SetSource::Const(Value::Bool(true))
            )]
        );
    }

    #[test]
    fn the_proposed_mapping_is_a_valid_connector_that_never_prints_the_password() {
        let proposal = press();
        let text = proposal.mapping_toml();
        assert!(!text.contains("line-1-secret"), "{text}");
        let mapped = OpcUaConfig::from_toml(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .remove(0);
        assert_eq!(mapped.name, "press-line");
        assert!(mapped.trust_server_certificate);
        assert_eq!(mapped.user.as_deref(), Some("doppel"));
        assert!(mapped.password.is_none(), "the password is left to fill in");
        let asset = &mapped.assets[0];
        assert_eq!(asset.path.as_str(), "acme/plant-a/line-1/press-1");
        let channels: Vec<(&str, &str, u64)> = asset
            .channels
            .iter()
            .map(|c| (c.channel.as_str(), c.node.as_str(), c.sampling_ms))
            .collect();
        assert_eq!(
            channels,
            vec![
                ("temperature", "ns=2;s=Press1.Temperature", 100),
                ("vibration", "ns=2;s=Press1.Vibration", 100),
                ("speed", "ns=2;s=Press1.Speed", 100),
                ("running", "ns=2;s=Press1.Running", 100),
            ]
        );
        let writes: Vec<(&str, &str)> = asset
            .writes
            .iter()
            .map(|w| (w.desired.as_str(), w.node.as_str()))
            .collect();
        assert_eq!(
            writes,
            vec![
                ("speed", "ns=2;s=Press1.Speed"),
                ("running", "ns=2;s=Press1.Running")
            ]
        );
        assert_eq!(asset.methods.len(), 2);
        assert_eq!(asset.methods[0].command, "ramp");
        assert_eq!(asset.methods[0].object, "ns=2;s=Press1");
        assert_eq!(
            asset.methods[0].args,
            vec![MethodArg::Typed {
                param: "rpm".to_string(),
                data_type: ScalarType::Float
            }]
        );
        assert_eq!(asset.methods[1].method, "ns=2;s=Press1.Stop");
        assert!(asset.methods[1].args.is_empty());
        assert!(
            text.contains(
                "#   ns=2;s=Press1.Mode (Press1.Mode): data type String is not a number or Boolean"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_mapping_without_credentials_validates_as_is() {
        let mut proposal = press();
        proposal.connector.user = None;
        proposal.connector.password = None;
        let mapped = OpcUaConfig::from_toml(&proposal.mapping_toml())
            .unwrap()
            .remove(0);
        mapped.validate().unwrap();
    }

    #[test]
    fn odd_names_and_node_ids_still_read_back() {
        let mut proposal = press();
        proposal.type_name = "press line".to_string();
        proposal.root_name = "Press \"1\"\nline".to_string();
        proposal.channels[0].node = "ns=2;s=Press\\1.\"Temp\"".to_string();
        proposal.channels[0].unit = "m³/h \"gross\"".to_string();
        let types = TwinTypes::from_toml(&proposal.types_toml(), "proposed").unwrap();
        let press = types.get("press line").unwrap();
        let temperature = press
            .channel_spec(press.channel("temperature").unwrap())
            .unwrap();
        assert_eq!(temperature.unit, "m³/h \"gross\"");
        let mapped = OpcUaConfig::from_toml(&proposal.mapping_toml())
            .unwrap()
            .remove(0);
        assert_eq!(
            mapped.assets[0].channels[0].node,
            "ns=2;s=Press\\1.\"Temp\""
        );
    }

    #[test]
    fn the_report_names_what_was_left_out_and_the_cut() {
        let mut proposal = press();
        let report = proposal.report();
        assert!(
            report.contains(
                "ns=2;s=Press1.Mode (Press1.Mode): data type String is not a number or Boolean"
            ),
            "{report}"
        );
        assert!(report.contains("the walk is complete"), "{report}");
        assert!(report.contains("OutputArguments (1)"), "{report}");
        proposal.cut.note_beyond_depth("ns=2;s=Deep".to_string());
        proposal.cut.beyond_nodes = 3;
        let report = proposal.report();
        assert!(
            report.contains(
                "the depth limit 6 cut the walk: 1 nodes below it were not followed (ns=2;s=Deep)"
            ),
            "{report}"
        );
        assert!(
            report.contains("the node limit 5000 cut the walk: 3 references"),
            "{report}"
        );
    }

    #[test]
    fn browse_names_become_snake_case_names() {
        for (browse_name, name) in [
            ("Temperature", "temperature"),
            ("MotorSpeed", "motor_speed"),
            ("EURange", "eu_range"),
            ("HTTPServer", "http_server"),
            ("Press1", "press1"),
            ("Temp2Max", "temp2_max"),
            ("Speed SP", "speed_sp"),
            ("speed__sp_", "speed_sp"),
            ("°C", "c"),
            ("°", ""),
        ] {
            assert_eq!(snake_case(browse_name), name, "{browse_name}");
        }
        assert_eq!(strip_parent("Press1.Temperature", "Press1"), "Temperature");
        assert_eq!(strip_parent("Press1_Speed", "Press1"), "Speed");
        assert_eq!(strip_parent("Press10", "Press1"), "Press10");
        assert_eq!(strip_parent("Press1.", "Press1"), "Press1.");
        assert_eq!(strip_parent("Temperature", ""), "Temperature");
    }

    #[test]
    fn a_name_taken_gets_a_number() {
        let mut names = Names::default();
        names.reserve("speed");
        assert_eq!(names.claim("speed"), "speed_2");
        assert_eq!(names.claim("speed"), "speed_3");
        assert_eq!(names.claim("temperature"), "temperature");
    }

    #[test]
    fn floats_render_as_toml_floats() {
        for number in [250.0, -20.0, 0.5, 1e-7, 1e16, f64::MAX, -f64::MAX, 0.0] {
            let text = format!("x = {}", float(number));
            let table: toml::Table = toml::from_str(&text).unwrap();
            assert_eq!(table["x"].as_float(), Some(number), "{text}");
        }
        assert_eq!(quoted("a\u{7}b"), "\"a\\u0007b\"");
        assert_eq!(key("set_speed"), "set_speed");
        assert_eq!(key("press line"), "\"press line\"");
    }
}
