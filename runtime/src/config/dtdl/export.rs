//! Twin types to DTDL v3 Interfaces.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value as Json, json};

use super::names::{
    Dtmi, MAX_INTERFACE_ID, NAME_RULE, dtmi_segment, is_dtdl_name, is_setter_of, setter_name,
    snake_case,
};
use super::units;
use super::{
    CONTEXT, DOUBLE_SPAN, DtdlError, Export, FLOAT_SPAN, Gap, INTEGER_SPAN, LONG_SPAN,
    QUANTITATIVE_TYPES, Unmapped, compatible,
};
use crate::config::{
    ChannelSpec, CommandSpec, DesiredSpec, ParamSpec, SetSource, TwinType, TwinTypes,
};
use crate::sample::ChannelId;
use crate::value::{Value, ValueKind};

/// Longest `description` DTDL allows, in characters.
const MAX_DESCRIPTION: usize = 512;

/// Writes the twin types of `types_toml` (`origin` names it in errors) as DTDL v3
/// Interfaces, each `<namespace>:<type name>;1`: `namespace` is a DTMI without version
/// such as `dtmi:com:example` (see the [module documentation](super) for the mapping).
pub fn export(types_toml: &str, origin: &str, namespace: &str) -> Result<Export, DtdlError> {
    check_namespace(namespace)?;
    let types = TwinTypes::from_toml(types_toml, origin)?;
    let mut report = Vec::new();
    let mut interfaces = Vec::with_capacity(types.len());
    let mut ids: HashMap<String, String> = HashMap::new();
    for twin_type in types.iter() {
        let mut writer = Writer {
            twin_type,
            report: &mut report,
            names: HashSet::new(),
            semantic: false,
        };
        let (id, interface) = writer.interface(namespace)?;
        if let Some(first) = ids.insert(id.clone(), twin_type.name.clone()) {
            return Err(DtdlError::TypeNameCollision {
                name: id,
                first,
                second: twin_type.name.clone(),
            });
        }
        interfaces.push(interface);
    }
    Ok(Export {
        interfaces: Json::Array(interfaces),
        report,
    })
}

/// A namespace is a user DTMI without version, outside the reserved prefixes.
fn check_namespace(namespace: &str) -> Result<(), DtdlError> {
    let problem = |reason: String| DtdlError::Namespace {
        namespace: namespace.to_string(),
        reason,
    };
    if namespace.contains(';') {
        return Err(problem(
            "a namespace has no version: each Interface gets `;1`".to_string(),
        ));
    }
    let dtmi = Dtmi::parse(namespace).map_err(problem)?;
    if matches!(
        dtmi.segments.first().map(String::as_str),
        Some("dtdl" | "standard")
    ) {
        return Err(problem(
            "`dtmi:dtdl:` and `dtmi:standard:` are reserved for the language".to_string(),
        ));
    }
    Ok(())
}

/// Writes one twin type.
struct Writer<'a> {
    twin_type: &'a TwinType,
    report: &'a mut Vec<Unmapped>,
    /// The content names taken so far: DTDL names are unique within an Interface.
    names: HashSet<String>,
    /// Whether a semantic type was written, so the QuantitativeTypes context is needed.
    semantic: bool,
}

impl Writer<'_> {
    fn left_out(&mut self, content: &str, reason: String) {
        self.note(content, Gap::LeftOut, reason);
    }

    fn assumed(&mut self, content: &str, reason: String) {
        self.note(content, Gap::Assumed, reason);
    }

    fn note(&mut self, content: &str, gap: Gap, reason: String) {
        self.report.push(Unmapped {
            interface: self.twin_type.name.clone(),
            content: content.to_string(),
            gap,
            reason,
        });
    }

    /// The Interface's DTMI and the Interface.
    fn interface(&mut self, namespace: &str) -> Result<(String, Json), DtdlError> {
        let twin_type = self.twin_type;
        let segment = dtmi_segment(&twin_type.name);
        let id = format!("{namespace}:{segment};1");
        if id.len() > MAX_INTERFACE_ID {
            return Err(DtdlError::Namespace {
                namespace: namespace.to_string(),
                reason: format!(
                    "the Interface `{id}` would be longer than {MAX_INTERFACE_ID} characters"
                ),
            });
        }
        let imported_name = snake_case(&segment);
        if imported_name != twin_type.name {
            self.left_out(
                "",
                format!("the Interface is `{id}`, which an import names `{imported_name}`"),
            );
        }

        let mut contents = Vec::new();
        for channel in &twin_type.channels {
            contents.extend(self.telemetry(channel));
        }
        for desired in &twin_type.desired {
            contents.extend(self.property(desired));
        }
        for command in twin_type.commands.values() {
            contents.extend(self.command(command));
        }
        self.report_the_rest();

        let mut interface = Map::new();
        let context = if self.semantic {
            json!([CONTEXT, QUANTITATIVE_TYPES])
        } else {
            json!(CONTEXT)
        };
        interface.insert("@context".to_string(), context);
        interface.insert("@id".to_string(), Json::from(id.as_str()));
        interface.insert("@type".to_string(), Json::from("Interface"));
        if !twin_type.description.is_empty() {
            let description: String = twin_type
                .description
                .chars()
                .take(MAX_DESCRIPTION)
                .collect();
            if description.len() < twin_type.description.len() {
                self.left_out(
                    "description",
                    format!("cut to {MAX_DESCRIPTION} characters, the DTDL limit"),
                );
            }
            interface.insert("description".to_string(), Json::from(description));
        }
        interface.insert("contents".to_string(), Json::Array(contents));
        Ok((id, Json::Object(interface)))
    }

    /// Takes `name` for a content of `kind`; a name DTDL cannot hold, or one taken
    /// already, leaves the content out.
    fn claim(&mut self, kind: &str, name: &str) -> bool {
        let content = format!("{kind} {name}");
        if !is_dtdl_name(name) {
            self.left_out(
                &content,
                format!("`{name}` is not a DTDL name ({NAME_RULE}, at most 512 characters)"),
            );
            return false;
        }
        if !self.names.insert(name.to_string()) {
            self.left_out(
                &content,
                format!(
                    "`{name}` names another content: DTDL names are unique within an Interface"
                ),
            );
            return false;
        }
        true
    }

    /// Sets the `@type` of `element`, its class with the semantic type of `unit` when
    /// DTDL has the unit, and its `unit`. `class_required`: whether `@type` must be
    /// written even without a semantic type.
    fn type_and_unit(
        &mut self,
        element: &mut Map<String, Json>,
        class: &str,
        class_required: bool,
        unit: &str,
        content: &str,
    ) {
        match units::dtdl_unit(unit) {
            Some(dtdl) => {
                self.semantic = true;
                element.insert("@type".to_string(), json!([class, dtdl.semantic_type]));
                element.insert("unit".to_string(), Json::from(dtdl.unit));
            }
            None => {
                if class_required {
                    element.insert("@type".to_string(), Json::from(class));
                }
                if !unit.is_empty() {
                    self.left_out(content, format!("unit `{unit}` has no DTDL unit"));
                }
            }
        }
    }

    /// The schema of a desired value or parameter; bounds other than a schema's span
    /// are reported.
    fn schema(
        &mut self,
        kind: ValueKind,
        range: Option<(f64, f64)>,
        content: &str,
    ) -> &'static str {
        let (schema, exact) = match (kind, range) {
            (ValueKind::Bool, None) => ("boolean", true),
            (ValueKind::Bool, Some(_)) => ("boolean", false),
            (ValueKind::Int, None) => ("long", true),
            (ValueKind::Int, Some(span)) if span == LONG_SPAN => ("long", true),
            (ValueKind::Int, Some(span)) if span == INTEGER_SPAN => ("integer", true),
            (ValueKind::Int, Some(_)) => ("long", false),
            (ValueKind::Float, None) => ("double", true),
            (ValueKind::Float, Some(span)) if span == DOUBLE_SPAN => ("double", true),
            (ValueKind::Float, Some(span)) if span == FLOAT_SPAN => ("float", true),
            (ValueKind::Float, Some(_)) => ("double", false),
        };
        if !exact && let Some((low, high)) = range {
            self.left_out(
                content,
                format!("range [{low}, {high}]: DTDL has no bounds, the schema is `{schema}`"),
            );
        }
        schema
    }

    fn telemetry(&mut self, channel: &ChannelSpec) -> Option<Json> {
        if !self.claim("channel", &channel.name) {
            return None;
        }
        let content = format!("channel {}", channel.name);
        let mut element = Map::new();
        self.type_and_unit(&mut element, "Telemetry", true, &channel.unit, &content);
        element.insert("name".to_string(), Json::from(channel.name.as_str()));
        element.insert("schema".to_string(), Json::from("double"));
        if channel.range != DOUBLE_SPAN {
            let (low, high) = channel.range;
            self.left_out(
                &content,
                format!("plausible range [{low}, {high}]: DTDL has no ranges"),
            );
        }
        if let Some(max_age) = channel.max_age {
            self.left_out(
                &content,
                format!(
                    "max_age_secs = {}: DTDL says nothing of staleness",
                    max_age.as_secs_f64()
                ),
            );
        }
        Some(Json::Object(element))
    }

    fn property(&mut self, desired: &DesiredSpec) -> Option<Json> {
        let twin_type = self.twin_type;
        if !self.claim("desired", &desired.name) {
            return None;
        }
        let content = format!("desired {}", desired.name);
        let schema = self.schema(desired.kind, desired.range, &content);
        let mut element = Map::new();
        self.type_and_unit(&mut element, "Property", true, &desired.unit, &content);
        element.insert("name".to_string(), Json::from(desired.name.as_str()));
        element.insert("schema".to_string(), Json::from(schema));
        element.insert("writable".to_string(), Json::from(true));
        if desired.initial != zero(desired.kind) {
            self.left_out(
                &content,
                format!(
                    "initial value {}: DTDL has no initial values",
                    desired.initial
                ),
            );
        }
        if let Some(reported) = desired.reported {
            let channel = channel_name(twin_type, reported);
            self.left_out(
                &content,
                format!(
                    "reported on channel `{channel}` within {}: DTDL does not tie a Property to Telemetry",
                    desired.tolerance
                ),
            );
        }
        if !twin_type
            .commands
            .values()
            .any(|command| sets_alone(command, desired))
        {
            self.assumed(
                &content,
                format!(
                    "no command sets it alone: an import adds `{}`",
                    setter_name(&desired.name)
                ),
            );
        }
        Some(Json::Object(element))
    }

    fn command(&mut self, command: &CommandSpec) -> Option<Json> {
        let twin_type = self.twin_type;
        let content = format!("command {}", command.name);
        if let Some(param) = command
            .params
            .iter()
            .find(|param| !is_dtdl_name(&param.name))
        {
            self.left_out(
                &content,
                format!(
                    "parameter `{}` is not a DTDL name ({NAME_RULE})",
                    param.name
                ),
            );
            return None;
        }
        if !self.claim("command", &command.name) {
            return None;
        }
        let mut element = Map::new();
        element.insert("@type".to_string(), Json::from("Command"));
        element.insert("name".to_string(), Json::from(command.name.as_str()));
        match command.params.as_slice() {
            [] => {}
            [param] => {
                let request = self.parameter(param, "CommandRequest", &content);
                element.insert("request".to_string(), request);
            }
            params => {
                let fields: Vec<Json> = params
                    .iter()
                    .map(|param| self.parameter(param, "Field", &content))
                    .collect();
                element.insert(
                    "request".to_string(),
                    json!({
                        "name": "params",
                        "schema": { "@type": "Object", "fields": fields },
                    }),
                );
            }
        }
        let is_setter = twin_type
            .desired
            .iter()
            .any(|desired| sets_alone(command, desired));
        if !is_setter {
            if !command.sets.is_empty() {
                let sets: Vec<String> = command
                    .sets
                    .iter()
                    .map(|(target, source)| match source {
                        SetSource::Param(param) => format!("{target} = {param}"),
                        SetSource::Const(value) => format!("{target} = {value}"),
                    })
                    .collect();
                self.left_out(
                    &content,
                    format!(
                        "sets {}: DTDL does not say what a Command changes",
                        sets.join(", ")
                    ),
                );
            }
            if let [param] = command.params.as_slice()
                && let Some(desired) = twin_type.desired.iter().find(|desired| {
                    is_setter_of(&command.name, &desired.name)
                        && compatible(param.kind, desired.kind)
                })
            {
                self.assumed(
                    &content,
                    format!(
                        "named as the setter of `{}`: an import makes it set `{}`",
                        desired.name, desired.name
                    ),
                );
            }
        }
        if command.clears_trips {
            self.left_out(
                &content,
                "clears latched trips: DTDL has no trips".to_string(),
            );
        }
        Some(Json::Object(element))
    }

    /// A command parameter as a CommandRequest or an Object field.
    fn parameter(&mut self, param: &ParamSpec, class: &str, content: &str) -> Json {
        let content = format!("{content} parameter {}", param.name);
        let schema = self.schema(param.kind, param.range, &content);
        let mut element = Map::new();
        self.type_and_unit(&mut element, class, false, &param.unit, &content);
        element.insert("name".to_string(), Json::from(param.name.as_str()));
        element.insert("schema".to_string(), Json::from(schema));
        Json::Object(element)
    }

    /// Reports what of the type DTDL has no words for at all.
    fn report_the_rest(&mut self) {
        let twin_type = self.twin_type;
        for (name, value) in &twin_type.properties {
            self.left_out(
                &format!("property {name}"),
                format!(
                    "a constant {} of the type: a DTDL Property is state of each twin",
                    value.type_str()
                ),
            );
        }
        for model in &twin_type.models {
            self.left_out(
                &format!("model {}", model.name),
                format!("DTDL has no models (kind `{}`)", model.kind),
            );
        }
        for governor in &twin_type.governors {
            self.left_out(
                &format!("governor {}", governor.name),
                format!("DTDL has no governors (kind `{}`)", governor.kind),
            );
        }
        let aggregates = [
            ("throughput", twin_type.aggregates.throughput),
            ("power", twin_type.aggregates.power),
        ];
        for (aggregate, channel) in aggregates {
            if let Some(channel) = channel {
                self.left_out(
                    "aggregates",
                    format!(
                        "{aggregate} from channel `{}`: DTDL has no aggregates",
                        channel_name(twin_type, channel)
                    ),
                );
            }
        }
        if !twin_type.key_channels.is_empty() {
            let keys: Vec<&str> = twin_type
                .key_channels
                .iter()
                .map(|&id| channel_name(twin_type, id))
                .collect();
            self.left_out(
                "key_channels",
                format!("{}: DTDL has no display order", keys.join(", ")),
            );
        }
    }
}

/// Whether `command` is the setter of `desired`: named so, one parameter, and setting
/// `desired` to it and nothing else.
fn sets_alone(command: &CommandSpec, desired: &DesiredSpec) -> bool {
    let [param] = command.params.as_slice() else {
        return false;
    };
    !command.clears_trips
        && is_setter_of(&command.name, &desired.name)
        && matches!(
            command.sets.as_slice(),
            [(target, SetSource::Param(source))] if *target == desired.name && *source == param.name
        )
}

/// The name of channel `id` of `twin_type`.
fn channel_name(twin_type: &TwinType, id: ChannelId) -> &str {
    twin_type
        .channel_spec(id)
        .map_or("?", |channel| channel.name.as_str())
}

/// The value an import gives a desired value of `kind` before any command.
fn zero(kind: ValueKind) -> Value {
    match kind {
        ValueKind::Bool => Value::Bool(false),
        ValueKind::Int => Value::Int(0),
        ValueKind::Float => Value::Float(0.0),
    }
}

#[cfg(test)]
mod tests {
    use doppel_testkit::twin_types;

    use super::*;

    const NAMESPACE: &str = "dtmi:com:example";

    fn contents(export: &Export) -> &Vec<Json> {
        export.interfaces[0]["contents"].as_array().unwrap()
    }

    fn content<'a>(export: &'a Export, name: &str) -> &'a Json {
        contents(export)
            .iter()
            .find(|content| content["name"] == name)
            .unwrap_or_else(|| panic!("no content `{name}`"))
    }

    fn says(report: &[Unmapped], content: &str, says: &str) -> bool {
        report
            .iter()
            .any(|entry| entry.content == content && entry.reason.contains(says))
    }

    #[test]
    fn the_press_exports_what_dtdl_says_and_reports_the_rest() {
        let exported = export(&twin_types::press(), "types.toml", NAMESPACE).unwrap();
        let interface = &exported.interfaces[0];
        assert_eq!(interface["@id"], "dtmi:com:example:press;1");
        assert_eq!(interface["@type"], "Interface");
        assert_eq!(interface["@context"], json!([CONTEXT, QUANTITATIVE_TYPES]));
        assert_eq!(interface["description"], "Hydraulic press");
        assert_eq!(
            content(&exported, "temperature"),
            &json!({
                "@type": ["Telemetry", "Temperature"],
                "name": "temperature",
                "schema": "double",
                "unit": "degreeCelsius",
            })
        );
        assert_eq!(
            content(&exported, "vibration"),
            &json!({ "@type": "Telemetry", "name": "vibration", "schema": "double" })
        );
        assert_eq!(
            content(&exported, "speed"),
            &json!({
                "@type": ["Property", "AngularVelocity"],
                "name": "speed",
                "schema": "double",
                "unit": "revolutionPerMinute",
                "writable": true,
            })
        );
        assert_eq!(
            content(&exported, "running"),
            &json!({ "@type": "Property", "name": "running", "schema": "boolean", "writable": true })
        );
        assert_eq!(
            content(&exported, "set_speed"),
            &json!({
                "@type": "Command",
                "name": "set_speed",
                "request": {
                    "@type": ["CommandRequest", "AngularVelocity"],
                    "name": "rpm",
                    "schema": "double",
                    "unit": "revolutionPerMinute",
                },
            })
        );
        assert_eq!(
            content(&exported, "reset"),
            &json!({ "@type": "Command", "name": "reset" })
        );

        let report = &exported.report;
        for (content, what) in [
            ("channel vibration", "unit `mm/s`"),
            ("channel throughput", "unit `parts/min`"),
            ("channel temperature", "plausible range [-20, 250]"),
            ("desired speed", "range [0, 3000]"),
            ("desired speed", "initial value 1200"),
            ("desired running", "initial value true"),
            ("desired running", "an import adds `set_running`"),
            ("command stop", "sets running = false"),
            ("command set_speed parameter rpm", "range [0, 3000]"),
            ("command reset", "clears latched trips"),
            ("model ewma_anomaly", "DTDL has no models"),
            ("governor overtemp", "DTDL has no governors"),
            ("aggregates", "power from channel `power_kw`"),
            ("key_channels", "temperature, vibration"),
        ] {
            assert!(
                says(report, content, what),
                "{content}: `{what}` missing from {report:#?}"
            );
        }
        // set_speed is the setter of speed, which DTDL says as a writable Property.
        assert!(
            !report
                .iter()
                .any(|entry| entry.content == "command set_speed"),
            "{report:#?}"
        );
    }

    #[test]
    fn several_parameters_make_an_object_request() {
        let types = r#"
[types.press.desired.maintenance_at]
type = "int"
range = [0, 4102444800]
initial = 0

[types.press.desired.maintenance_minutes]
type = "int"
range = [-2147483648, 2147483647]
initial = 0

[types.press.commands.schedule_maintenance]
params.at = { type = "int", min = 0, max = 4102444800 }
params.duration_min = { type = "int", min = -2147483648, max = 2147483647, unit = "min" }
sets = { maintenance_at = "at", maintenance_minutes = "duration_min" }
"#;
        let exported = export(types, "types.toml", NAMESPACE).unwrap();
        assert_eq!(
            content(&exported, "schedule_maintenance")["request"],
            json!({
                "name": "params",
                "schema": {
                    "@type": "Object",
                    "fields": [
                        { "name": "at", "schema": "long" },
                        {
                            "@type": ["Field", "TimeSpan"],
                            "name": "duration_min",
                            "schema": "integer",
                            "unit": "minute",
                        },
                    ],
                },
            })
        );
        assert_eq!(
            content(&exported, "maintenance_minutes")["schema"],
            "integer"
        );
        let report = &exported.report;
        assert!(says(
            report,
            "command schedule_maintenance parameter at",
            "range [0, 4102444800]"
        ));
        assert!(says(
            report,
            "command schedule_maintenance",
            "sets maintenance_at = at, maintenance_minutes = duration_min"
        ));
    }

    #[test]
    fn names_dtdl_cannot_hold_are_left_out_and_reported() {
        let types = r#"
[types.mixer.channels.speed]
range = [0.0, 10.0]

[types.mixer.channels."temp-1"]
range = [0.0, 10.0]

[types.mixer.desired.speed]
initial = 0.0

[types.mixer.commands.go]
params."bad-name" = { type = "float" }
"#;
        let exported = export(types, "types.toml", NAMESPACE).unwrap();
        let names: Vec<&str> = contents(&exported)
            .iter()
            .map(|content| content["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["speed"]);
        let report = &exported.report;
        assert!(
            says(report, "channel temp-1", "not a DTDL name"),
            "{report:#?}"
        );
        assert!(
            says(report, "desired speed", "names another content"),
            "{report:#?}"
        );
        assert!(
            says(report, "command go", "parameter `bad-name`"),
            "{report:#?}"
        );
    }

    #[test]
    fn a_namespace_is_a_user_dtmi_without_version() {
        let types = twin_types::PRESS_BASE;
        for bad in [
            "",
            "com:example",
            "dtmi:com:example;1",
            "dtmi:dtdl:example",
            "dtmi:com:ex-ample",
        ] {
            assert!(
                matches!(
                    export(types, "types.toml", bad),
                    Err(DtdlError::Namespace { .. })
                ),
                "{bad}"
            );
        }
        let long = format!("dtmi:{}", "a".repeat(130));
        assert!(matches!(
            export(types, "types.toml", &long),
            Err(DtdlError::Namespace { .. })
        ));
        assert!(matches!(
            export("[types.x", "types.toml", NAMESPACE),
            Err(DtdlError::Config(_))
        ));
    }
}
