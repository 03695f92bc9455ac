//! Reading DTDL documents: each Interface with its contents, checked for what DTDL v3
//! requires of it, and the Interfaces written inline in it.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value as Json};

use super::{DISPLAY_KEYS, check_dtmi, describe, note};
use crate::config::dtdl::names::{Dtmi, MAX_INTERFACE_ID, NAME_RULE, is_dtdl_name};
use crate::config::dtdl::{CONTEXT, DtdlError, Gap, QUANTITATIVE_TYPES, Unmapped};

/// An Interface as read from its document.
pub(super) struct Interface {
    /// Its DTMI.
    pub(super) id: String,
    /// The DTMI's parts, for the type name.
    pub(super) dtmi: Dtmi,
    /// The document it is written in.
    pub(super) origin: String,
    /// Whether it stands at the top of its document (not inline in another).
    pub(super) top_level: bool,
    /// Whether its `@context` (or the one it inherits) names QuantitativeTypes.
    pub(super) quantitative: bool,
    /// Its `description`, else its `displayName`.
    pub(super) title: Option<String>,
    /// How many display names, descriptions and comments it and its contents hold.
    pub(super) display_texts: usize,
    /// The DTMIs it extends.
    pub(super) extends: Vec<String>,
    /// Its own contents.
    pub(super) contents: Vec<Content>,
    /// Its complex schemas, by DTMI.
    pub(super) schemas: HashMap<String, Json>,
}

/// The five kinds of Interface contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    Telemetry,
    Property,
    Command,
    Relationship,
    Component,
}

impl Class {
    fn parse(term: &str) -> Option<Self> {
        match term {
            "Telemetry" => Some(Self::Telemetry),
            "Property" => Some(Self::Property),
            "Command" => Some(Self::Command),
            "Relationship" => Some(Self::Relationship),
            "Component" => Some(Self::Component),
            _ => None,
        }
    }

    /// The keys DTDL v3 gives the class that a twin type has a use for (display keys
    /// aside); any other is reported.
    pub(super) fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Telemetry => &["@type", "@id", "name", "schema", "unit"],
            Self::Property => &["@type", "@id", "name", "schema", "unit", "writable"],
            Self::Command => &["@type", "@id", "name", "request", "response"],
            Self::Relationship => &[
                "@type",
                "@id",
                "name",
                "target",
                "minMultiplicity",
                "maxMultiplicity",
                "properties",
                "writable",
            ],
            Self::Component => &["@type", "@id", "name", "schema"],
        }
    }
}

/// One content of an Interface, checked for its class and name.
pub(super) struct Content {
    pub(super) class: Class,
    pub(super) name: String,
    /// The `@type` terms besides the class (semantic types, extension types).
    pub(super) co_types: Vec<String>,
    pub(super) element: Map<String, Json>,
    /// For a Component, the DTMI of its Interface.
    pub(super) component: Option<String>,
}

/// The Interfaces of all documents.
#[derive(Default)]
pub(super) struct Reader {
    pub(super) interfaces: Vec<Interface>,
    pub(super) by_id: HashMap<String, usize>,
    pub(super) report: Vec<Unmapped>,
}

impl Reader {
    pub(super) fn read_document(&mut self, origin: &str, text: &str) -> Result<(), DtdlError> {
        let document: Json = serde_json::from_str(text).map_err(|source| DtdlError::Json {
            origin: origin.to_string(),
            source,
        })?;
        let not_an_interface = |found: &Json| DtdlError::NotAnInterface {
            origin: origin.to_string(),
            found: describe(found).to_string(),
        };
        match &document {
            Json::Object(object) => {
                self.register(object, origin, None)?;
            }
            Json::Array(items) => {
                for item in items {
                    let Json::Object(object) = item else {
                        return Err(not_an_interface(item));
                    };
                    self.register(object, origin, None)?;
                }
            }
            other => return Err(not_an_interface(other)),
        }
        Ok(())
    }

    /// Reads an Interface and the Interfaces written inline in it; `inherited` is the
    /// QuantitativeTypes flag of the Interface it is written in, `None` at the top of a
    /// document. Returns its DTMI.
    fn register(
        &mut self,
        object: &Map<String, Json>,
        origin: &str,
        inherited: Option<bool>,
    ) -> Result<String, DtdlError> {
        let invalid = |element: &str, message: String| DtdlError::Invalid {
            origin: origin.to_string(),
            element: element.to_string(),
            message,
        };
        let missing = |element: &str, field: &'static str| DtdlError::Missing {
            origin: origin.to_string(),
            element: element.to_string(),
            field,
        };
        let id = match object.get("@id") {
            Some(Json::String(id)) => id.clone(),
            Some(other) => {
                return Err(invalid(
                    "an interface",
                    format!("`@id` is {}, not a DTMI", describe(other)),
                ));
            }
            None => return Err(missing("an interface", "@id")),
        };
        let dtmi = check_dtmi(&id, origin)?;
        let bad_id = |reason: String| DtdlError::BadDtmi {
            origin: origin.to_string(),
            dtmi: id.clone(),
            reason,
        };
        if id.len() > MAX_INTERFACE_ID {
            return Err(bad_id(format!(
                "an interface's DTMI is at most {MAX_INTERFACE_ID} characters"
            )));
        }
        if matches!(
            dtmi.segments.first().map(String::as_str),
            Some("dtdl" | "standard")
        ) {
            return Err(bad_id(
                "`dtmi:dtdl:` and `dtmi:standard:` are reserved for the language".to_string(),
            ));
        }
        let element = format!("interface `{id}`");
        let terms = type_terms(object.get("@type"))
            .map_err(|message| invalid(&element, message))?
            .ok_or_else(|| missing(&element, "@type"))?;
        if !terms.iter().any(|term| term.as_str() == "Interface") {
            return Err(invalid(
                &element,
                "`@type` must be \"Interface\"".to_string(),
            ));
        }
        for co_type in terms.iter().filter(|term| *term != "Interface") {
            self.report.push(note(
                &id,
                "",
                Gap::LeftOut,
                format!("co-type `{co_type}` has no equivalent in twin types"),
            ));
        }
        let quantitative = match (object.get("@context"), inherited) {
            (Some(context), _) => read_context(context).map_err(|found| DtdlError::Context {
                origin: origin.to_string(),
                interface: id.clone(),
                found,
            })?,
            (None, Some(quantitative)) => quantitative,
            (None, None) => return Err(missing(&element, "@context")),
        };

        let mut description = None;
        let mut display_name = None;
        let mut display_texts = 0;
        let mut extends = Vec::new();
        let mut contents = Vec::new();
        let mut schemas = HashMap::new();
        for (key, value) in object {
            match key.as_str() {
                "@id" | "@type" | "@context" => {}
                "description" | "displayName" => {
                    let (text, other_languages) = localized(value)
                        .map_err(|message| invalid(&element, format!("`{key}` {message}")))?;
                    display_texts += 1 + other_languages;
                    if key == "description" {
                        description = Some(text);
                    } else {
                        display_name = Some(text);
                    }
                }
                "comment" => display_texts += 1,
                "extends" => extends = self.read_extends(value, origin, &element, quantitative)?,
                "contents" => {
                    let Json::Array(items) = value else {
                        return Err(invalid(&element, "`contents` must be an array".to_string()));
                    };
                    let mut names = HashSet::new();
                    for item in items {
                        let content = self.read_content(item, origin, &id, quantitative)?;
                        if !names.insert(content.name.clone()) {
                            return Err(DtdlError::DuplicateName {
                                origin: origin.to_string(),
                                interface: id.clone(),
                                name: content.name,
                            });
                        }
                        contents.push(content);
                    }
                    display_texts += count_display_texts(value);
                }
                "schemas" => {
                    schemas = read_schemas(value, origin, &element)?;
                    display_texts += count_display_texts(value);
                }
                other => self.report.push(note(
                    &id,
                    "",
                    Gap::LeftOut,
                    format!("`{other}` has no equivalent in twin types"),
                )),
            }
        }

        if let Some(&first) = self.by_id.get(&id) {
            return Err(DtdlError::DuplicateInterface {
                first: self.interfaces[first].origin.clone(),
                second: origin.to_string(),
                id,
            });
        }
        self.by_id.insert(id.clone(), self.interfaces.len());
        self.interfaces.push(Interface {
            id: id.clone(),
            dtmi,
            origin: origin.to_string(),
            top_level: inherited.is_none(),
            quantitative,
            title: description.or(display_name),
            display_texts,
            extends,
            contents,
            schemas,
        });
        Ok(id)
    }

    fn read_extends(
        &mut self,
        value: &Json,
        origin: &str,
        element: &str,
        quantitative: bool,
    ) -> Result<Vec<String>, DtdlError> {
        let items = match value {
            Json::Array(items) => items.as_slice(),
            single => std::slice::from_ref(single),
        };
        let mut bases = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Json::String(reference) => {
                    check_dtmi(reference, origin)?;
                    bases.push(reference.clone());
                }
                Json::Object(inline) => {
                    bases.push(self.register(inline, origin, Some(quantitative))?)
                }
                other => {
                    return Err(DtdlError::Invalid {
                        origin: origin.to_string(),
                        element: element.to_string(),
                        message: format!(
                            "`extends` holds {}, not a DTMI or an interface",
                            describe(other)
                        ),
                    });
                }
            }
        }
        Ok(bases)
    }

    fn read_content(
        &mut self,
        item: &Json,
        origin: &str,
        interface: &str,
        quantitative: bool,
    ) -> Result<Content, DtdlError> {
        let invalid = |element: &str, message: String| DtdlError::Invalid {
            origin: origin.to_string(),
            element: element.to_string(),
            message,
        };
        let missing = |element: &str, field: &'static str| DtdlError::Missing {
            origin: origin.to_string(),
            element: element.to_string(),
            field,
        };
        let anonymous = format!("a content of interface `{interface}`");
        let Json::Object(element) = item else {
            return Err(invalid(
                &anonymous,
                format!("it is {}, not an object", describe(item)),
            ));
        };
        let name = match element.get("name") {
            Some(Json::String(name)) => name.clone(),
            Some(other) => {
                return Err(invalid(
                    &anonymous,
                    format!("`name` is {}, not a string", describe(other)),
                ));
            }
            None => return Err(missing(&anonymous, "name")),
        };
        let at = format!("`{name}` of interface `{interface}`");
        if !is_dtdl_name(&name) {
            return Err(invalid(
                &at,
                format!("a name is {NAME_RULE}, at most 512 characters"),
            ));
        }
        let terms = type_terms(element.get("@type"))
            .map_err(|message| invalid(&at, message))?
            .ok_or_else(|| missing(&at, "@type"))?;
        let classes: Vec<Class> = terms.iter().filter_map(|term| Class::parse(term)).collect();
        let [class] = classes.as_slice() else {
            return Err(invalid(
                &at,
                "`@type` must name one of Telemetry, Property, Command, Relationship and Component"
                    .to_string(),
            ));
        };
        let class = *class;
        let co_types = terms
            .into_iter()
            .filter(|term| Class::parse(term).is_none())
            .collect();
        let component = if class == Class::Component {
            match element.get("schema") {
                Some(Json::String(reference)) => {
                    check_dtmi(reference, origin)?;
                    Some(reference.clone())
                }
                Some(Json::Object(inline)) => {
                    Some(self.register(inline, origin, Some(quantitative))?)
                }
                Some(other) => {
                    return Err(invalid(
                        &at,
                        format!("`schema` is {}, not an interface", describe(other)),
                    ));
                }
                None => return Err(missing(&at, "schema")),
            }
        } else {
            None
        };
        Ok(Content {
            class,
            name,
            co_types,
            element: element.clone(),
            component,
        })
    }
}

/// Whether `@context` is DTDL v3, and whether it names QuantitativeTypes; the
/// `@context` as JSON when it is not DTDL v3.
fn read_context(value: &Json) -> Result<bool, String> {
    let entries: Option<Vec<&str>> = match value {
        Json::String(entry) => Some(vec![entry.as_str()]),
        Json::Array(items) => items.iter().map(Json::as_str).collect(),
        _ => None,
    };
    match entries {
        Some(entries) if entries.first() == Some(&CONTEXT) => {
            Ok(entries.contains(&QUANTITATIVE_TYPES))
        }
        _ => Err(value.to_string()),
    }
}

/// The terms of an `@type`: `None` when there is none.
fn type_terms(value: Option<&Json>) -> Result<Option<Vec<String>>, String> {
    let malformed = || "`@type` must be a string or an array of strings".to_string();
    match value {
        None => Ok(None),
        Some(Json::String(term)) => Ok(Some(vec![term.clone()])),
        Some(Json::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(malformed),
        Some(_) => Err(malformed()),
    }
}

/// The co-types of an element whose `@type` is optional (a CommandRequest, a Field).
pub(super) fn co_types(element: &Map<String, Json>, class: &str) -> Result<Vec<String>, String> {
    Ok(type_terms(element.get("@type"))?
        .unwrap_or_default()
        .into_iter()
        .filter(|term| term != class)
        .collect())
}

/// A localizable string: the text, or of a language map the English text (else the
/// first), with the number of other languages.
fn localized(value: &Json) -> Result<(String, usize), String> {
    match value {
        Json::String(text) => Ok((text.clone(), 0)),
        Json::Object(languages) => {
            let mut texts = Vec::with_capacity(languages.len());
            for (language, text) in languages {
                let Some(text) = text.as_str() else {
                    return Err(format!(
                        "holds {} for language `{language}`",
                        describe(text)
                    ));
                };
                texts.push((language.as_str(), text));
            }
            let english = texts
                .iter()
                .find(|(language, _)| *language == "en" || language.starts_with("en-"));
            match english.or(texts.first()) {
                Some((_, text)) => Ok(((*text).to_string(), texts.len() - 1)),
                None => Err("is an empty language map".to_string()),
            }
        }
        other => Err(format!(
            "is {}, not a string or a language map",
            describe(other)
        )),
    }
}

/// Display names, descriptions and comments in `value`, not counting those of
/// Interfaces written inline (which count their own).
fn count_display_texts(value: &Json) -> usize {
    match value {
        Json::Object(object) if is_interface(object) => 0,
        Json::Object(object) => object
            .iter()
            .map(|(key, value)| {
                usize::from(DISPLAY_KEYS.contains(&key.as_str())) + count_display_texts(value)
            })
            .sum(),
        Json::Array(items) => items.iter().map(count_display_texts).sum(),
        _ => 0,
    }
}

fn is_interface(object: &Map<String, Json>) -> bool {
    match object.get("@type") {
        Some(Json::String(term)) => term == "Interface",
        Some(Json::Array(terms)) => terms.iter().any(|term| term.as_str() == Some("Interface")),
        _ => false,
    }
}

fn read_schemas(
    value: &Json,
    origin: &str,
    element: &str,
) -> Result<HashMap<String, Json>, DtdlError> {
    let invalid = |message: String| DtdlError::Invalid {
        origin: origin.to_string(),
        element: element.to_string(),
        message,
    };
    let Json::Array(items) = value else {
        return Err(invalid("`schemas` must be an array".to_string()));
    };
    let mut schemas = HashMap::new();
    for item in items {
        let Some(id) = item.get("@id").and_then(Json::as_str) else {
            return Err(invalid(
                "every schema in `schemas` needs an `@id`".to_string(),
            ));
        };
        check_dtmi(id, origin)?;
        if schemas.insert(id.to_string(), item.clone()).is_some() {
            return Err(invalid(format!("schema `{id}` is defined twice")));
        }
    }
    Ok(schemas)
}
