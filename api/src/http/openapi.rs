//! The OpenAPI 3.1 document of the REST API, generated from the route table and the
//! messages' descriptors: the same descriptors that write and read every body, so the
//! document and the API cannot drift apart.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use super::json::{is_query_field, is_time};
use super::problem::PROBLEM_JSON;
use super::routes::{Call, Method, ROUTES, Route};

/// The document's schema name for a message.
fn schema_ref(message: &MessageDescriptor) -> Json {
    json!({ "$ref": format!("#/components/schemas/{}", message.full_name()) })
}

/// Leading comments from the proto sources, by file and element path.
struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    fn new(pool: &DescriptorPool) -> Self {
        let mut by_file = HashMap::new();
        for file in pool.files() {
            let mut comments = HashMap::new();
            if let Some(info) = &file.file_descriptor_proto().source_code_info {
                for location in &info.location {
                    if let Some(text) = &location.leading_comments {
                        let text = text
                            .lines()
                            .map(str::trim)
                            .collect::<Vec<_>>()
                            .join(" ")
                            .trim()
                            .to_string();
                        if !text.is_empty() {
                            comments.insert(location.path.clone(), text);
                        }
                    }
                }
            }
            by_file.insert(file.name().to_string(), comments);
        }
        Self { by_file }
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.by_file.get(file)?.get(path).map(String::as_str)
    }
}

/// Builds the document.
pub(crate) fn document(pool: &DescriptorPool) -> Json {
    let comments = Comments::new(pool);
    let mut needed = BTreeSet::new();
    let mut paths: BTreeMap<&str, Map<String, Json>> = BTreeMap::new();
    needed.insert("doppel.v1.Problem".to_string());
    for route in ROUTES {
        let Some(request) = pool.get_message_by_name(route.request) else {
            continue;
        };
        let Some(response) = pool.get_message_by_name(route.response) else {
            continue;
        };
        let operation = operation(route, &request, &response, &comments, &mut needed);
        paths
            .entry(route.path)
            .or_default()
            .insert(route.method.as_str().to_string(), operation);
    }
    paths.entry("/api/v1/openapi.json").or_default().insert(
        "get".into(),
        json!({
            "operationId": "getOpenApi",
            "summary": "This document.",
            "security": [],
            "responses": { "200": { "description": "The OpenAPI document.", "content": { "application/json": {} } } },
        }),
    );
    // Every message a schema reaches, transitively.
    let mut schemas = Map::new();
    let mut queue: Vec<String> = needed.into_iter().collect();
    let mut seen = BTreeSet::new();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some(message) = pool.get_message_by_name(&name) else {
            continue;
        };
        let (schema, refs) = message_schema(&message, &[], false, &comments);
        queue.extend(refs);
        schemas.insert(name, schema);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Doppel REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The twins of a Doppel node (and, through it, of its cluster) over HTTP/JSON, beside the gRPC API: the same calls, tokens, roles and errors. Bodies are the canonical proto3 JSON mapping of the doppel.v1 messages; errors are RFC 9457 problem details. Asset paths and alarm codes are single path segments: encode `/` as `%2F`.",
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas,
        },
        "security": [ { "bearer": [] } ],
        "paths": paths,
    })
}

fn operation(
    route: &Route,
    request: &MessageDescriptor,
    response: &MessageDescriptor,
    comments: &Comments,
    needed: &mut BTreeSet<String>,
) -> Json {
    let path_params: Vec<&str> = route.path_params().collect();
    let mut parameters = Vec::new();
    for name in &path_params {
        let field = super::json::field(request, name);
        parameters.push(json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": field.as_ref().and_then(|f| field_comment(f, comments)).unwrap_or_default(),
            "schema": { "type": "string" },
        }));
    }
    let mut operation = Map::new();
    operation.insert("operationId".into(), json!(route.operation));
    operation.insert("summary".into(), json!(route.summary));
    operation.insert(
        "description".into(),
        json!(format!("{} Needs {}.", route.summary, route.needs.words())),
    );
    match route.method {
        Method::Get => {
            for field in request.fields() {
                if path_params.contains(&field.json_name()) || !is_query_field(&field) {
                    continue;
                }
                let (mut schema, _) = field_schema(&field);
                if let Some(items) = schema.get("items").cloned()
                    && field.is_list()
                {
                    schema = json!({ "type": "array", "items": items });
                }
                parameters.push(json!({
                    "name": field.json_name(),
                    "in": "query",
                    "required": false,
                    "description": field_comment(&field, comments).unwrap_or_default(),
                    "schema": schema,
                }));
            }
        }
        Method::Post => {
            let (schema, refs) = message_schema(request, &path_params, true, comments);
            needed.extend(refs);
            operation.insert(
                "requestBody".into(),
                json!({
                    "required": false,
                    "content": { "application/json": { "schema": schema } },
                }),
            );
        }
    }
    operation.insert("parameters".into(), Json::Array(parameters));
    let ok = if route.call == Call::Watch {
        let events = response
            .fields()
            .map(|f| format!("`{}`", f.json_name()))
            .collect::<Vec<_>>()
            .join(", ");
        needed.insert(response.full_name().to_string());
        json!({
            "description": format!("A stream of server-sent events named after the fields of {} ({events}, and `error` with a problem before the stream ends); each event's data is that field's message as JSON.", response.full_name()),
            "content": { "text/event-stream": { "schema": { "type": "string" } } },
        })
    } else {
        needed.insert(response.full_name().to_string());
        json!({
            "description": "OK",
            "content": { "application/json": { "schema": schema_ref(response) } },
        })
    };
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": { PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/doppel.v1.Problem" } } },
        })
    };
    let mut responses = Map::new();
    responses.insert("200".into(), ok);
    responses.insert(
        "400".into(),
        problem("A bad argument (INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE)."),
    );
    responses.insert(
        "401".into(),
        problem("No bearer token, or one the node does not accept."),
    );
    responses.insert("403".into(), problem("The token's role may not do this."));
    if !path_params.is_empty() || route.call == Call::ClusterStatus {
        responses.insert("404".into(), problem("No such twin, type or alarm here."));
    }
    responses.insert(
        "429".into(),
        problem("The node is overloaded; try again later."),
    );
    responses.insert("503".into(), problem("Not available: a twin still starting (`Retry-After` says when to try again), or the node stopping."));
    responses.insert(
        "default".into(),
        problem("Any other error, with the gRPC code the same call would return."),
    );
    operation.insert("responses".into(), Json::Object(responses));
    Json::Object(operation)
}

fn field_comment<'a>(field: &FieldDescriptor, comments: &'a Comments) -> Option<&'a str> {
    comments.get(field.parent_file().name(), field.path())
}

/// A message's schema, leaving out `skip` fields (those a URL's path gives), and the
/// messages it refers to. In a response, fields without presence are always written,
/// so required; in a request every field may be left out.
fn message_schema(
    message: &MessageDescriptor,
    skip: &[&str],
    request: bool,
    comments: &Comments,
) -> (Json, Vec<String>) {
    if let Some(schema) = well_known(message) {
        return (schema, Vec::new());
    }
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut refs = Vec::new();
    for field in message.fields() {
        if skip.contains(&field.json_name()) {
            continue;
        }
        let (mut schema, field_refs) = field_schema(&field);
        refs.extend(field_refs);
        if let Some(text) = field_comment(&field, comments)
            && let Json::Object(object) = &mut schema
        {
            if object.contains_key("$ref") {
                schema = json!({ "allOf": [schema], "description": text });
            } else {
                object.insert("description".into(), json!(text));
            }
        }
        properties.insert(field.json_name().to_string(), schema);
        if !request && !field.supports_presence() {
            required.push(field.json_name().to_string());
        }
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    if let Some(text) = comments.get(message.parent_file().name(), message.path()) {
        schema.insert("description".into(), json!(text));
    }
    schema.insert("properties".into(), Json::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema.insert("additionalProperties".into(), json!(false));
    (Json::Object(schema), refs)
}

/// The schemas of the well-known types the mapping writes as strings.
fn well_known(message: &MessageDescriptor) -> Option<Json> {
    match message.full_name() {
        "google.protobuf.Timestamp" => Some(json!({ "type": "string", "format": "date-time" })),
        "google.protobuf.Duration" => Some(json!({
            "type": "string",
            "pattern": "^-?[0-9]+(\\.[0-9]{1,9})?s$",
            "description": "A duration in seconds with an `s` suffix, e.g. `2.5s`.",
        })),
        _ => None,
    }
}

/// A field's schema, and the message it refers to.
fn field_schema(field: &FieldDescriptor) -> (Json, Vec<String>) {
    // A map is a JSON object from its keys (strings in JSON) to its values.
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let (value, refs) = field_schema(&entry.map_entry_value_field());
        return (
            json!({ "type": "object", "additionalProperties": value }),
            refs,
        );
    }
    let mut refs = Vec::new();
    let single = match field.kind() {
        Kind::Double | Kind::Float => json!({
            "anyOf": [
                { "type": "number" },
                { "type": "string", "enum": ["NaN", "Infinity", "-Infinity"] },
            ],
        }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": 4_294_967_295u64 })
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]+$" })
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]+$" })
        }
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
        Kind::Enum(enumeration) => json!({
            "type": "string",
            "enum": enumeration.values().map(|v| v.name().to_string()).collect::<Vec<_>>(),
        }),
        Kind::Message(message) => {
            if is_time(&message) {
                well_known(&message).unwrap_or_else(|| json!({}))
            } else {
                refs.push(message.full_name().to_string());
                schema_ref(&message)
            }
        }
    };
    if field.is_list() {
        (json!({ "type": "array", "items": single }), refs)
    } else {
        (single, refs)
    }
}
