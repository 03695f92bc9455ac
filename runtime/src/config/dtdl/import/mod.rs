//! DTDL v3 documents to twin types: reading Interfaces (`read`), resolving `extends`
//! and Components (`resolve`), mapping contents (`contents`, `schema`) into a type in
//! the making (`draft`), and writing `types.toml` (`toml_text`).

mod contents;
mod draft;
mod read;
mod resolve;
mod schema;
mod toml_text;

use std::collections::HashMap;

use serde_json::Value as Json;

use self::draft::TypeDraft;
use self::read::Reader;
use self::toml_text::comment_text;
use super::names::Dtmi;
use super::{DtdlError, Gap, Import, ImportedType, Unmapped};
use crate::config::TwinTypes;

/// Keys of text for people, which twin types do not keep.
const DISPLAY_KEYS: [&str; 3] = ["displayName", "description", "comment"];
/// The origin `TwinTypes::from_toml` names when it checks what an import wrote.
const IMPORTED: &str = "imported DTDL";

/// Reads DTDL v3 documents, `(origin, JSON text)` pairs such as file names and their
/// contents, and makes a twin type of every Interface no other Interface extends or
/// holds as a Component (see the [module documentation](super) for the mapping).
pub fn import(documents: &[(String, String)]) -> Result<Import, DtdlError> {
    let mut reader = Reader::default();
    for (origin, text) in documents {
        reader.read_document(origin, text)?;
    }
    if reader.interfaces.is_empty() {
        return Err(DtdlError::NoInterfaces);
    }
    let mut report = std::mem::take(&mut reader.report);
    let flat = reader.resolve()?;
    let roots = reader.roots();
    let names = reader.type_names(&roots)?;
    let type_of: HashMap<&str, &str> = roots
        .iter()
        .zip(&names)
        .map(|(&root, name)| (reader.interfaces[root].id.as_str(), name.as_str()))
        .collect();

    let origins: Vec<&str> = documents
        .iter()
        .map(|(origin, _)| origin.as_str())
        .collect();
    let mut toml = format!(
        "# Twin types from DTDL v3: {}\n",
        comment_text(&origins.join(", "))
    );
    let mut types = Vec::with_capacity(roots.len());
    let mut relationships = Vec::new();
    for (&root, name) in roots.iter().zip(&names) {
        let mut draft = TypeDraft::new(&reader, &flat, root, name);
        draft.map_contents()?;
        draft.check_names()?;
        draft.link_setters();
        draft.note_assumptions();
        for hint in &mut draft.relationships {
            hint.target_type = hint
                .target
                .as_deref()
                .and_then(|target| type_of.get(target))
                .map(|target_type| (*target_type).to_string());
        }
        draft.render(&mut toml);
        types.push(ImportedType {
            name: name.clone(),
            interface: draft.interface.id.clone(),
        });
        relationships.extend(draft.relationships);
        report.extend(draft.report);
    }
    for (index, interface) in reader.interfaces.iter().enumerate() {
        let used = usize::from(roots.contains(&index) && interface.title.is_some());
        let dropped = interface.display_texts.saturating_sub(used);
        if dropped > 0 {
            report.push(note(
                &interface.id,
                "",
                Gap::LeftOut,
                format!("{dropped} display names, descriptions and comments are not kept"),
            ));
        }
    }
    TwinTypes::from_toml(&toml, IMPORTED)?;
    Ok(Import {
        toml,
        types,
        relationships,
        report,
    })
}

/// An [`Unmapped`] entry.
fn note(interface: &str, content: &str, gap: Gap, reason: String) -> Unmapped {
    Unmapped {
        interface: interface.to_string(),
        content: content.to_string(),
        gap,
        reason,
    }
}

fn check_dtmi(reference: &str, origin: &str) -> Result<Dtmi, DtdlError> {
    Dtmi::parse(reference).map_err(|reason| DtdlError::BadDtmi {
        origin: origin.to_string(),
        dtmi: reference.to_string(),
        reason,
    })
}

/// A JSON value's kind, in words.
fn describe(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::dtdl::{BOOLEAN_SPAN, DOUBLE_SPAN, INTEGER_SPAN, RelationshipHint};
    use crate::config::{ChannelSpec, SetSource, TwinType};
    use crate::value::{Value, ValueKind};

    /// A document of `tests/fixtures/dtdl`.
    fn fixture(name: &str) -> (String, String) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/dtdl")
            .join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        (name.to_string(), text)
    }

    fn fixtures(names: &[&str]) -> Vec<(String, String)> {
        names.iter().map(|&name| fixture(name)).collect()
    }

    /// Imports `documents`, which must succeed, and parses the types.
    fn imported(documents: &[(String, String)]) -> (Import, TwinTypes) {
        let result = import(documents).unwrap_or_else(|error| panic!("{error}"));
        let types = TwinTypes::from_toml(&result.toml, "imported")
            .unwrap_or_else(|error| panic!("{error}\n{}", result.toml));
        (result, types)
    }

    fn import_one(json: &str) -> Result<Import, DtdlError> {
        import(&[("test.json".to_string(), json.to_string())])
    }

    /// An Interface document in DTDL v3 with `extra` keys (each preceded by a comma)
    /// and `contents`.
    fn interface(id: &str, extra: &str, contents: &str) -> String {
        format!(
            r#"{{"@context": "dtmi:dtdl:context;3", "@id": "{id}", "@type": "Interface"{extra}, "contents": [{contents}]}}"#
        )
    }

    /// Whether `report` has an entry about `content` (alone or in a list) that says `says`.
    fn says(report: &[Unmapped], content: &str, says: &str) -> bool {
        report.iter().any(|entry| {
            entry.content.split(", ").any(|listed| listed == content) && entry.reason.contains(says)
        })
    }

    fn channel<'a>(twin_type: &'a TwinType, name: &str) -> &'a ChannelSpec {
        twin_type
            .channel(name)
            .and_then(|id| twin_type.channel_spec(id))
            .unwrap_or_else(|| panic!("no channel `{name}`"))
    }

    #[test]
    fn a_thermostat_becomes_channels_a_desired_value_and_commands() {
        let (result, types) = imported(&fixtures(&["thermostat.json"]));
        assert_eq!(
            result.types,
            [ImportedType {
                name: "thermostat".to_string(),
                interface: "dtmi:com:example:Thermostat;1".to_string(),
            }]
        );
        let thermostat = types.get("thermostat").unwrap();
        assert_eq!(
            thermostat.description,
            "Reports current temperature and provides desired temperature control."
        );
        assert_eq!(thermostat.channels.len(), 2);
        let temperature = channel(thermostat, "temperature");
        assert_eq!(temperature.unit, "degC");
        assert_eq!(temperature.range, DOUBLE_SPAN);
        assert_eq!(channel(thermostat, "maxTempSinceLastReboot").unit, "degC");

        let (_, target) = thermostat.desired("targetTemperature").unwrap();
        assert_eq!(
            (
                target.kind,
                target.unit.as_str(),
                target.range,
                target.initial
            ),
            (ValueKind::Float, "degC", None, Value::Float(0.0))
        );
        assert_eq!(
            thermostat.commands["setTargetTemperature"].sets,
            [(
                "targetTemperature".to_string(),
                SetSource::Param("targetTemperature".to_string())
            )]
        );
        let boost = &thermostat.commands["boost"];
        let duration = &boost.params[0];
        assert_eq!(
            (
                boost.params.len(),
                duration.name.as_str(),
                duration.kind,
                duration.range,
                duration.unit.as_str()
            ),
            (1, "duration", ValueKind::Int, Some(INTEGER_SPAN), "min")
        );
        assert!(boost.sets.is_empty());
        let band: Vec<(&str, ValueKind, &str)> = thermostat.commands["setComfortBand"]
            .params
            .iter()
            .map(|param| (param.name.as_str(), param.kind, param.unit.as_str()))
            .collect();
        assert_eq!(
            band,
            [
                ("high", ValueKind::Float, "degC"),
                ("low", ValueKind::Float, "degC")
            ]
        );
        assert!(!thermostat.commands.contains_key("getMaxMinReport"));

        let report = &result.report;
        assert!(says(report, "getMaxMinReport", "`dateTime`"), "{report:#?}");
        assert!(
            says(report, "maxTempSinceLastReboot", "read-only Property"),
            "{report:#?}"
        );
        assert!(
            says(report, "temperature", "no plausible range"),
            "{report:#?}"
        );
        assert!(
            says(report, "setTargetTemperature", "set by a command"),
            "{report:#?}"
        );
        assert!(
            says(report, "boost", "does not say what a Command changes"),
            "{report:#?}"
        );
        assert!(
            report
                .iter()
                .any(|entry| entry.interface == "dtmi:com:example:Thermostat;1"
                    && entry.reason.contains("display names")),
            "{report:#?}"
        );
    }

    #[test]
    fn components_are_flattened_under_their_name_and_relationships_kept_as_hints() {
        // The controller comes first: references resolve across documents in any order.
        let (result, types) = imported(&fixtures(&[
            "temperature_controller.json",
            "thermostat.json",
            "device_information.json",
        ]));
        let names: Vec<&str> = result.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["temperature_controller"],
            "components are parts, not types"
        );
        let controller = types.get("temperature_controller").unwrap();
        for (name, unit) in [
            ("workingSet", "KiB"),
            ("thermostat1_temperature", "degC"),
            ("thermostat1_maxTempSinceLastReboot", "degC"),
            ("thermostat2_temperature", "degC"),
            ("deviceInformation_totalStorage", "KiB"),
            ("deviceInformation_totalMemory", "KiB"),
        ] {
            assert_eq!(channel(controller, name).unit, unit, "{name}");
        }
        assert_eq!(controller.channels.len(), 7);
        assert!(
            controller
                .desired("thermostat2_targetTemperature")
                .is_some()
        );
        assert_eq!(
            controller.commands["thermostat1_setTargetTemperature"].sets,
            [(
                "thermostat1_targetTemperature".to_string(),
                SetSource::Param("targetTemperature".to_string())
            )]
        );
        assert!(controller.commands.contains_key("thermostat2_boost"));
        let delay = &controller.commands["reboot"].params[0];
        assert_eq!((delay.name.as_str(), delay.unit.as_str()), ("delay", "s"));

        assert_eq!(
            result.relationships,
            [RelationshipHint {
                twin_type: "temperature_controller".to_string(),
                name: "floor".to_string(),
                target: Some("dtmi:com:example:Floor;1".to_string()),
                target_type: None,
                min: Some(0),
                max: Some(1),
            }]
        );
        assert!(
            result.toml.contains(
                "# temperature_controller: relationship floor → dtmi:com:example:Floor;1, 0..1"
            ),
            "{}",
            result.toml
        );
        for left_out in [
            "serialNumber",
            "thermostat1.getMaxMinReport",
            "thermostat2.getMaxMinReport",
            "deviceInformation.manufacturer",
            "deviceInformation.swVersion",
            "floor",
        ] {
            assert!(
                result
                    .report
                    .iter()
                    .any(|entry| entry.content == left_out && entry.gap == Gap::LeftOut),
                "{left_out} not reported: {:#?}",
                result.report
            );
        }
    }

    #[test]
    fn extends_is_resolved_across_documents() {
        let (result, types) = imported(&fixtures(&[
            "building.json",
            "conference_room.json",
            "room.json",
        ]));
        let names: Vec<&str> = result.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["building", "boardroom"],
            "bases are parts, not types"
        );
        let boardroom = types.get("boardroom").unwrap();
        assert_eq!(channel(boardroom, "occupied").range, BOOLEAN_SPAN);
        assert_eq!(channel(boardroom, "capacity").range, INTEGER_SPAN);
        // Room's own `@context` names QuantitativeTypes: its semantic type is read so.
        assert_eq!(channel(boardroom, "temperature").unit, "degC");
        let (_, projector) = boardroom.desired("projectorOn").unwrap();
        assert_eq!(
            (projector.kind, projector.initial),
            (ValueKind::Bool, Value::Bool(false))
        );
        assert!(boardroom.commands.contains_key("setProjectorOn"));
        assert_eq!(types.get("building").unwrap().description, "Building");
        assert_eq!(
            result.relationships[0].target.as_deref(),
            Some("dtmi:com:example:Room;1")
        );
        assert!(
            says(&result.report, "name", "a `string`"),
            "{:#?}",
            result.report
        );
    }

    #[test]
    fn what_has_no_equivalent_is_reported_never_dropped_silently() {
        let (result, types) = imported(&fixtures(&["sensor.json"]));
        let sensor = types.get("sensor").unwrap();
        for (name, unit) in [
            ("thermometer", "degC"),
            ("barometer", "mbar"),
            ("humidityMeter", "%"),
            ("anemometer", "m/s"),
            ("accelerometer_x", ""),
            ("vibration_z", ""),
        ] {
            assert_eq!(channel(sensor, name).unit, unit, "{name}");
        }
        assert_eq!(channel(sensor, "humidityMeter").range, INTEGER_SPAN);
        assert!(sensor.commands.contains_key("set_enabled"));
        for absent in ["ledState", "state", "location", "status"] {
            assert!(sensor.channel(absent).is_none(), "{absent}");
        }
        assert!(sensor.desired("modules").is_none());
        for (content, why) in [
            ("ledState", "an Array"),
            ("state", "an Enum"),
            ("location", "a geospatial `point`"),
            ("status", "a `string`"),
            ("modules", "a Map"),
            ("anemometer", "`Historized`"),
            (
                "humidityMeter",
                "`RelativeHumidity` is kept only as its unit",
            ),
            ("accelerometer", "each numeric field is a channel"),
        ] {
            assert!(
                says(&result.report, content, why),
                "{content}: `{why}` missing from {:#?}",
                result.report
            );
        }
    }

    #[test]
    fn documents_that_are_not_dtdl_v3_interfaces_are_refused() {
        assert!(matches!(import_one("{"), Err(DtdlError::Json { .. })));
        assert!(matches!(
            import_one("42"),
            Err(DtdlError::NotAnInterface { .. })
        ));
        assert!(matches!(
            import_one("[true]"),
            Err(DtdlError::NotAnInterface { .. })
        ));
        assert!(matches!(import_one("[]"), Err(DtdlError::NoInterfaces)));
        assert!(matches!(
            import_one(r#"{"@context": "dtmi:dtdl:context;3", "@type": "Interface"}"#),
            Err(DtdlError::Missing { field: "@id", .. })
        ));
        assert!(matches!(
            import_one(r#"{"@id": "dtmi:com:example:A;1", "@type": "Interface"}"#),
            Err(DtdlError::Missing {
                field: "@context",
                ..
            })
        ));
        let version_2 = interface("dtmi:com:example:A;1", "", "").replace("context;3", "context;2");
        let error = import_one(&version_2).unwrap_err();
        assert!(matches!(error, DtdlError::Context { .. }), "{error}");
        assert!(error.to_string().contains("dtmi:dtdl:context;2"), "{error}");
        for bad_id in [
            "dtmi:com:example:A;01",
            "dtmi:dtdl:example:A;1",
            "com:example:A;1",
        ] {
            assert!(
                matches!(
                    import_one(&interface(bad_id, "", "")),
                    Err(DtdlError::BadDtmi { .. })
                ),
                "{bad_id}"
            );
        }
        let telemetry =
            interface("dtmi:com:example:A;1", "", "").replace("\"Interface\"", "\"Telemetry\"");
        assert!(matches!(
            import_one(&telemetry),
            Err(DtdlError::Invalid { .. })
        ));
        let bad_name = interface(
            "dtmi:com:example:A;1",
            "",
            r#"{"@type": "Telemetry", "name": "temp-1", "schema": "double"}"#,
        );
        assert!(matches!(
            import_one(&bad_name),
            Err(DtdlError::Invalid { .. })
        ));
        let version_4_schema = interface(
            "dtmi:com:example:A;1",
            "",
            r#"{"@type": "Telemetry", "name": "t", "schema": "byte"}"#,
        );
        let error = import_one(&version_4_schema).unwrap_err();
        assert!(
            error.to_string().contains("`byte` is not a DTDL v3 schema"),
            "{error}"
        );
    }

    #[test]
    fn two_contents_of_one_name_are_refused_inherited_ones_too() {
        let twice = interface(
            "dtmi:com:example:A;1",
            "",
            r#"{"@type": "Telemetry", "name": "t", "schema": "double"},
               {"@type": "Property", "name": "t", "schema": "double"}"#,
        );
        assert!(matches!(
            import_one(&twice),
            Err(DtdlError::DuplicateName { .. })
        ));
        let base = interface(
            "dtmi:com:example:Base;1",
            "",
            r#"{"@type": "Telemetry", "name": "t", "schema": "double"}"#,
        );
        let derived = interface(
            "dtmi:com:example:Derived;1",
            r#", "extends": "dtmi:com:example:Base;1""#,
            r#"{"@type": "Telemetry", "name": "t", "schema": "double"}"#,
        );
        let error = import(&[
            ("base.json".to_string(), base.clone()),
            ("derived.json".to_string(), derived),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, DtdlError::DuplicateName { name, .. } if name == "t"),
            "{error}"
        );
        let error = import(&[
            ("base.json".to_string(), base.clone()),
            ("copy.json".to_string(), base),
        ])
        .unwrap_err();
        assert!(
            error.to_string().contains("in base.json and in copy.json"),
            "{error}"
        );
    }

    #[test]
    fn extends_cycles_unknown_bases_and_deep_chains_are_refused() {
        let a = interface(
            "dtmi:com:example:A;1",
            r#", "extends": "dtmi:com:example:B;1""#,
            "",
        );
        let b = interface(
            "dtmi:com:example:B;1",
            r#", "extends": ["dtmi:com:example:A;1"]"#,
            "",
        );
        let error =
            import(&[("a.json".to_string(), a.clone()), ("b.json".to_string(), b)]).unwrap_err();
        assert!(matches!(error, DtdlError::ExtendsCycle { .. }), "{error}");
        assert!(
            error
                .to_string()
                .contains("dtmi:com:example:A;1 → dtmi:com:example:B;1 → dtmi:com:example:A;1"),
            "{error}"
        );

        let error = import(&[("a.json".to_string(), a)]).unwrap_err();
        assert!(
            matches!(&error, DtdlError::UnknownInterface { reference, .. }
                if reference == "dtmi:com:example:B;1"),
            "{error}"
        );

        // Level<n> extends Level<n-1>: eleven Interfaces make ten levels, the limit.
        let chain = |length: usize| -> Vec<(String, String)> {
            (0..length)
                .map(|level| {
                    let extends = match level {
                        0 => String::new(),
                        _ => format!(r#", "extends": "dtmi:com:example:Level{};1""#, level - 1),
                    };
                    let id = format!("dtmi:com:example:Level{level};1");
                    (format!("level{level}.json"), interface(&id, &extends, ""))
                })
                .collect()
        };
        let (deepest, _) = imported(&chain(11));
        assert_eq!(deepest.types[0].name, "level10");
        assert!(matches!(
            import(&chain(12)),
            Err(DtdlError::ExtendsTooDeep { .. })
        ));
    }

    #[test]
    fn components_do_not_nest() {
        let inner = interface(
            "dtmi:com:example:Inner;1",
            "",
            r#"{"@type": "Telemetry", "name": "t", "schema": "double"}"#,
        );
        let middle = interface(
            "dtmi:com:example:Middle;1",
            "",
            r#"{"@type": "Component", "name": "inner", "schema": "dtmi:com:example:Inner;1"}"#,
        );
        let outer = interface(
            "dtmi:com:example:Outer;1",
            "",
            r#"{"@type": "Component", "name": "middle", "schema": "dtmi:com:example:Middle;1"}"#,
        );
        let error = import(&[
            ("inner.json".to_string(), inner),
            ("middle.json".to_string(), middle),
            ("outer.json".to_string(), outer),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, DtdlError::NestedComponent { component, inner, .. }
                if component == "middle" && inner == "inner"),
            "{error}"
        );
    }

    #[test]
    fn names_that_collide_once_flattened_are_refused() {
        let part = interface(
            "dtmi:com:example:Part;1",
            "",
            r#"{"@type": "Telemetry", "name": "b", "schema": "double"}"#,
        );
        let whole = interface(
            "dtmi:com:example:Whole;1",
            "",
            r#"{"@type": "Telemetry", "name": "a_b", "schema": "double"},
               {"@type": "Component", "name": "a", "schema": "dtmi:com:example:Part;1"}"#,
        );
        let error = import(&[
            ("part.json".to_string(), part),
            ("whole.json".to_string(), whole),
        ])
        .unwrap_err();
        assert!(
            matches!(&error, DtdlError::NameCollision { name, .. } if name == "a_b"),
            "{error}"
        );
    }

    #[test]
    fn a_unit_belongs_to_its_semantic_type_whose_context_is_named() {
        let wrong_unit = r#"{
            "@context": ["dtmi:dtdl:context;3", "dtmi:dtdl:extension:quantitativeTypes;1"],
            "@id": "dtmi:com:example:A;1",
            "@type": "Interface",
            "contents": [
                {"@type": ["Telemetry", "Temperature"], "name": "t", "schema": "double", "unit": "bar"}
            ]
        }"#;
        let error = import_one(wrong_unit).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("`bar` is not a unit of `Temperature`"),
            "{error}"
        );
        let no_context = interface(
            "dtmi:com:example:A;1",
            "",
            r#"{"@type": ["Telemetry", "Temperature"], "name": "t", "schema": "double", "unit": "degreeCelsius"}"#,
        );
        let (result, _) = imported(&[("a.json".to_string(), no_context)]);
        assert!(
            says(&result.report, "t", "needs the context"),
            "{:#?}",
            result.report
        );
        assert!(
            result.toml.contains("[types.a.channels.t]\nrange = "),
            "{}",
            result.toml
        );
    }

    #[test]
    fn type_names_are_qualified_where_they_would_collide() {
        let documents = [
            (
                "a.json".to_string(),
                interface("dtmi:com:acme:Pump;1", "", ""),
            ),
            (
                "b.json".to_string(),
                interface("dtmi:com:example:Pump;1", "", ""),
            ),
            (
                "c.json".to_string(),
                interface("dtmi:com:example:Pump;2", "", ""),
            ),
        ];
        let (result, _) = imported(&documents);
        let names: Vec<&str> = result.types.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "com_acme_pump",
                "com_example_pump_v1",
                "com_example_pump_v2"
            ]
        );
    }

    #[test]
    fn a_command_named_as_a_setter_sets_its_property() {
        let fan = r#"{"@context": "dtmi:dtdl:context;3", "@id": "dtmi:com:example:Fan;1",
            "@type": "Interface", "contents": [
                {"@type": "Property", "name": "speed", "schema": "double", "writable": true},
                {"@type": "Command", "name": "setSpeed",
                 "request": {"name": "rpm", "schema": "integer"}}
            ]}"#;
        let (result, types) = imported(&[("fan.json".to_string(), fan.to_string())]);
        let fan = types.get("fan").unwrap();
        assert_eq!(fan.commands.len(), 1, "{}", result.toml);
        assert_eq!(
            fan.commands["setSpeed"].sets,
            [("speed".to_string(), SetSource::Param("rpm".to_string()))]
        );
    }

    #[test]
    fn inline_interfaces_are_parts_not_types() {
        let tank = r#"{"@context": "dtmi:dtdl:context;3", "@id": "dtmi:com:example:Tank;1",
            "@type": "Interface",
            "extends": {"@id": "dtmi:com:example:Vessel;1", "@type": "Interface",
                "contents": [{"@type": "Telemetry", "name": "level", "schema": "double"}]},
            "contents": [{"@type": "Component", "name": "inlet",
                "schema": {"@id": "dtmi:com:example:Valve;1", "@type": "Interface",
                    "contents": [{"@type": "Property", "name": "open", "schema": "boolean",
                        "writable": true}]}}]}"#;
        let (result, types) = imported(&[("tank.json".to_string(), tank.to_string())]);
        assert_eq!(result.types.len(), 1);
        let tank = types.get("tank").unwrap();
        assert!(tank.channel("level").is_some());
        assert!(tank.desired("inlet_open").is_some());
        assert_eq!(
            tank.commands["inlet_set_open"].sets,
            [(
                "inlet_open".to_string(),
                SetSource::Param("open".to_string())
            )]
        );
    }

    #[test]
    fn descriptions_keep_quotes_backslashes_and_line_breaks() {
        let text = "a \"quoted\" \\ line\nand a tab\t";
        let document = interface(
            "dtmi:com:example:A;1",
            &format!(r#", "description": {}"#, Json::from(text)),
            "",
        );
        let (_, types) = imported(&[("a.json".to_string(), document)]);
        assert_eq!(types.get("a").unwrap().description, text);
    }

    proptest::proptest! {
        /// A document with a stretch cut out and junk put in its place is imported or
        /// refused with an error, never a panic.
        #[test]
        fn mangled_documents_are_imported_or_refused(
            start in 0usize..3200,
            length in 0usize..48,
            junk in "[\\[\\]{}\",:a-zA-Z0-9;]{0,8}",
        ) {
            let (_, text) = fixture("temperature_controller.json");
            let start = start.min(text.len());
            let end = (start + length).min(text.len());
            let mangled = format!("{}{junk}{}", &text[..start], &text[end..]);
            let _ = import(&[
                ("mangled.json".to_string(), mangled),
                fixture("thermostat.json"),
                fixture("device_information.json"),
            ]);
        }
    }
}
