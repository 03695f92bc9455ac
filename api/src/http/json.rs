//! Proto messages in the canonical proto3 JSON mapping, by their descriptors: the
//! responses the REST API sends, and requests built from a URL's path and query and a
//! JSON body.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor,
    SerializeOptions,
};
use serde_json::{Map, Value as Json};

use super::problem::Problem;
use crate::error::ApiError;

/// Scalar fields are always written, so every response has the same shape; message,
/// oneof and `optional` fields only when set. 64-bit integers are strings, enums their
/// names, as the mapping says.
const SERIALIZE: SerializeOptions = SerializeOptions::new().skip_default_fields(false);

/// Messages whose JSON the server keeps: every watcher of a change is sent the same
/// message, which is written once.
const SHARED_MESSAGES: usize = 4096;

/// The descriptors of every Doppel message.
#[derive(Clone)]
pub(crate) struct Codec {
    pool: DescriptorPool,
    /// JSON of recently written watch messages, by their protobuf bytes.
    shared: Arc<Mutex<HashMap<Vec<u8>, Arc<str>>>>,
}

impl Codec {
    /// Loads the descriptors compiled into `doppel-proto`.
    pub(crate) fn new() -> Result<Self, ApiError> {
        let pool = DescriptorPool::decode(doppel_proto::FILE_DESCRIPTOR_SET)
            .map_err(|error| ApiError::Transport(format!("descriptors: {error}")))?;
        Ok(Self {
            pool,
            shared: Arc::default(),
        })
    }

    /// The descriptor pool.
    pub(crate) fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    /// A message's descriptor by full name.
    pub(crate) fn message(&self, name: &str) -> Result<MessageDescriptor, Problem> {
        self.pool
            .get_message_by_name(name)
            .ok_or_else(|| Problem::internal(format!("no descriptor for {name}")))
    }

    /// `value`, a `name` message, as JSON text.
    pub(crate) fn encode<T: prost::Message>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<String, Problem> {
        self.json_of(name, &value.encode_to_vec())
    }

    /// Like [`Codec::encode`], for a message many watchers are sent: written once,
    /// then shared while it is among the last [`SHARED_MESSAGES`] written.
    pub(crate) fn encode_shared<T: prost::Message>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<Arc<str>, Problem> {
        let bytes = value.encode_to_vec();
        if let Some(json) = self.shared.lock().get(&bytes) {
            return Ok(json.clone());
        }
        let json: Arc<str> = Arc::from(self.json_of(name, &bytes)?);
        let mut shared = self.shared.lock();
        if shared.len() >= SHARED_MESSAGES {
            shared.clear();
        }
        shared.insert(bytes, json.clone());
        Ok(json)
    }

    /// The JSON text of a `name` message's protobuf bytes.
    fn json_of(&self, name: &str, bytes: &[u8]) -> Result<String, Problem> {
        let dynamic = DynamicMessage::decode(self.message(name)?, bytes)
            .map_err(|error| Problem::internal(format!("{name}: {error}")))?;
        let mut out = Vec::with_capacity(256);
        let mut serializer = serde_json::Serializer::new(&mut out);
        dynamic
            .serialize_with_options(&mut serializer, &SERIALIZE)
            .map_err(|error| Problem::internal(format!("{name}: {error}")))?;
        String::from_utf8(out).map_err(|error| Problem::internal(format!("{name}: {error}")))
    }

    /// A `name` message from its JSON form; unknown fields are refused.
    pub(crate) fn decode<T: prost::Message + Default>(
        &self,
        name: &str,
        json: Json,
    ) -> Result<T, Problem> {
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let dynamic = DynamicMessage::deserialize_with_options(self.message(name)?, json, &options)
            .map_err(|error| Problem::invalid(format!("invalid request: {error}")))?;
        dynamic
            .transcode_to::<T>()
            .map_err(|error| Problem::internal(format!("{name}: {error}")))
    }
}

/// The JSON form of a `descriptor` request: the body's object, then each path
/// parameter and query parameter as the field of that name (its JSON or proto name).
/// A query parameter is refused when the message has no such field, when it names a
/// message field other than a timestamp or duration, or when a field that is not
/// repeated is given twice; a path parameter may not be contradicted by the body.
pub(crate) fn request_json(
    descriptor: &MessageDescriptor,
    body: Option<Json>,
    path: &[(String, String)],
    query: &[(String, String)],
) -> Result<Json, Problem> {
    let mut object = match body {
        None => Map::new(),
        Some(Json::Object(object)) => object,
        Some(_) => return Err(Problem::invalid("the request body must be a JSON object")),
    };
    for (name, value) in path {
        let field = field(descriptor, name)
            .ok_or_else(|| Problem::internal(format!("no field for path parameter {name}")))?;
        let key = field.json_name().to_string();
        let value = Json::String(value.clone());
        for given in [key.as_str(), field.name()] {
            if let Some(body_value) = object.get(given)
                && *body_value != value
            {
                return Err(Problem::invalid(format!(
                    "`{given}` in the body contradicts the URL's `{name}`"
                )));
            }
        }
        object.remove(field.name());
        object.insert(key, value);
    }
    for (name, value) in query {
        let field = field(descriptor, name).ok_or_else(|| {
            Problem::invalid(format!(
                "unknown query parameter `{name}`; this resource takes {}",
                query_names(descriptor, path)
            ))
        })?;
        if path
            .iter()
            .any(|(p, _)| field.json_name() == p || field.name() == p)
        {
            return Err(Problem::invalid(format!(
                "`{name}` is part of the URL's path, not its query"
            )));
        }
        let value = query_value(&field, value)?;
        let key = field.json_name().to_string();
        if field.is_list() {
            match object.entry(key).or_insert_with(|| Json::Array(Vec::new())) {
                Json::Array(items) => items.push(value),
                _ => {
                    return Err(Problem::invalid(format!(
                        "`{name}` is given in the body and the query"
                    )));
                }
            }
        } else if object.insert(key, value).is_some() {
            return Err(Problem::invalid(format!("`{name}` is given twice")));
        }
    }
    Ok(Json::Object(object))
}

/// The fields a query may set, for messages.
fn query_names(descriptor: &MessageDescriptor, path: &[(String, String)]) -> String {
    let names: Vec<String> = descriptor
        .fields()
        .filter(is_query_field)
        .filter(|field| !path.iter().any(|(p, _)| field.json_name() == p))
        .map(|field| format!("`{}`", field.json_name()))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// A field found by its JSON name or its proto name.
pub(crate) fn field(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor
        .get_field_by_json_name(name)
        .or_else(|| descriptor.get_field_by_name(name))
}

/// Whether a field can be given in a query: scalars, enums, timestamps and durations.
pub(crate) fn is_query_field(field: &FieldDescriptor) -> bool {
    !field.is_map()
        && match field.kind() {
            Kind::Message(message) => is_time(&message),
            _ => true,
        }
}

/// Timestamps and durations, which the mapping writes as strings.
pub(crate) fn is_time(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp" | "google.protobuf.Duration"
    )
}

/// A query parameter's text as the JSON value of its field: the mapping accepts
/// numbers, enums, timestamps and durations as strings; booleans are parsed.
fn query_value(field: &FieldDescriptor, text: &str) -> Result<Json, Problem> {
    if !is_query_field(field) {
        return Err(Problem::invalid(format!(
            "`{}` cannot be given in a query",
            field.json_name()
        )));
    }
    match field.kind() {
        Kind::Bool => match text {
            "true" | "1" | "" => Ok(Json::Bool(true)),
            "false" | "0" => Ok(Json::Bool(false)),
            _ => Err(Problem::invalid(format!(
                "`{}` must be true or false, not `{text}`",
                field.json_name()
            ))),
        },
        _ => Ok(Json::String(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doppel_proto::v1 as pb;

    fn codec() -> Codec {
        Codec::new().unwrap()
    }

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_request_is_built_from_path_query_and_body() {
        let codec = codec();
        let descriptor = codec.message("doppel.v1.GetHistoryRequest").unwrap();
        let json = request_json(
            &descriptor,
            None,
            &pairs(&[("assetPath", "acme/plant/press-1")]),
            &pairs(&[
                ("channel", "temperature"),
                ("limit", "5"),
                ("from", "2026-01-01T00:00:00Z"),
            ]),
        )
        .unwrap();
        let request: pb::GetHistoryRequest =
            codec.decode("doppel.v1.GetHistoryRequest", json).unwrap();
        assert_eq!(request.asset_path, "acme/plant/press-1");
        assert_eq!(request.channel, "temperature");
        assert_eq!(request.limit, 5);
        assert_eq!(request.from.unwrap().seconds, 1_767_225_600);
    }

    #[test]
    fn unknown_repeated_and_contradicting_parameters_are_refused() {
        let codec = codec();
        let descriptor = codec.message("doppel.v1.GetHistoryRequest").unwrap();
        let path = pairs(&[("assetPath", "a/b")]);
        let unknown = request_json(&descriptor, None, &path, &pairs(&[("chanel", "x")]));
        assert!(unknown.unwrap_err().to_proto().detail.contains("`channel`"));
        let twice = request_json(
            &descriptor,
            None,
            &path,
            &pairs(&[("limit", "1"), ("limit", "2")]),
        );
        assert!(twice.unwrap_err().to_proto().detail.contains("twice"));
        let send = codec.message("doppel.v1.SendCommandRequest").unwrap();
        let contradicts = request_json(
            &send,
            Some(serde_json::json!({"assetPath": "x/y", "command": "stop"})),
            &path,
            &[],
        );
        assert!(
            contradicts
                .unwrap_err()
                .to_proto()
                .detail
                .contains("contradicts")
        );
        let bad = codec.decode::<pb::SendCommandRequest>(
            "doppel.v1.SendCommandRequest",
            serde_json::json!({"command": "stop", "colour": 1}),
        );
        assert_eq!(bad.unwrap_err().status().as_u16(), 400);
    }

    #[test]
    fn responses_follow_the_proto3_json_mapping() {
        let codec = codec();
        let summary = pb::TwinSummary {
            asset_path: "a/b".into(),
            version: 7,
            run_state: pb::RunState::Tripped as i32,
            ..Default::default()
        };
        let json: Json =
            serde_json::from_str(&codec.encode("doppel.v1.TwinSummary", &summary).unwrap())
                .unwrap();
        assert_eq!(json["assetPath"], "a/b");
        assert_eq!(json["version"], "7");
        assert_eq!(json["runState"], "RUN_STATE_TRIPPED");
        assert_eq!(json["alarmCount"], 0);
        assert!(json.get("mirror").is_none());
    }
}
