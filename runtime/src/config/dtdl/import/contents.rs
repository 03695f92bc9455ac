//! What each kind of Interface content becomes in a twin type.

use std::collections::HashSet;

use serde_json::{Map, Value as Json};

use super::draft::{ChannelDraft, CommandDraft, DesiredDraft, ParamDraft, TypeDraft};
use super::read::{Class, Content, co_types};
use super::schema::{Field, Numeric, Schema};
use super::{DISPLAY_KEYS, check_dtmi, describe};
use crate::config::dtdl::names::{NAME_RULE, is_dtdl_name};
use crate::config::dtdl::units::{self, UnitProblem};
use crate::config::dtdl::{DtdlError, QUANTITATIVE_TYPES, RelationshipHint};
use crate::value::ValueKind;

impl<'r> TypeDraft<'r> {
    pub(super) fn map_contents(&mut self) -> Result<(), DtdlError> {
        let reader = self.reader;
        let flat = self.flat;
        for &(owner, index) in &flat[self.root] {
            self.map_content(owner, &reader.interfaces[owner].contents[index], "", "")?;
        }
        Ok(())
    }

    /// Maps one content of Interface `owner`; `prefix` is the Component prefix of
    /// names, `path` the same for reports (`thermostat1.`).
    fn map_content(
        &mut self,
        owner: usize,
        content: &'r Content,
        prefix: &str,
        path: &str,
    ) -> Result<(), DtdlError> {
        let here = format!("{path}{}", content.name);
        let at = format!(
            "`{}` of interface `{}`",
            content.name, self.reader.interfaces[owner].id
        );
        for key in content.element.keys() {
            let key = key.as_str();
            if !content.class.keys().contains(&key) && !DISPLAY_KEYS.contains(&key) {
                self.left_out(&here, format!("`{key}` has no equivalent in twin types"));
            }
        }
        if !matches!(content.class, Class::Telemetry | Class::Property) {
            // Only Telemetry and Properties take semantic types (read with the unit).
            for co_type in &content.co_types {
                self.left_out(
                    &here,
                    format!("co-type `{co_type}` has no equivalent in twin types"),
                );
            }
        }
        match content.class {
            Class::Telemetry => self.telemetry(owner, content, prefix, &here, &at),
            Class::Property => self.property(owner, content, prefix, &here, &at),
            Class::Command => self.command(owner, content, prefix, &here, &at),
            Class::Relationship => self.relationship(owner, content, prefix, &here, &at),
            Class::Component => self.component(owner, content, prefix, path),
        }
    }

    fn schema_of(
        &self,
        owner: usize,
        element: &'r Map<String, Json>,
        at: &str,
    ) -> Result<Schema<'r>, DtdlError> {
        let reader = self.reader;
        let Some(schema) = element.get("schema") else {
            return Err(DtdlError::Missing {
                origin: reader.interfaces[owner].origin.clone(),
                element: at.to_string(),
                field: "schema",
            });
        };
        reader.schema(owner, schema, at, 0)
    }

    fn telemetry(
        &mut self,
        owner: usize,
        content: &'r Content,
        prefix: &str,
        here: &str,
        at: &str,
    ) -> Result<(), DtdlError> {
        let name = format!("{prefix}{}", content.name);
        match self.schema_of(owner, &content.element, at)? {
            Schema::Number(numeric) => {
                let unit = self.unit(owner, &content.co_types, &content.element, here, at)?;
                self.channel(name, unit, numeric, here);
            }
            Schema::Object(object) => {
                let mut made = Vec::new();
                for field in self.fields(owner, object, at)? {
                    let field_here = format!("{here}.{}", field.name);
                    match field.schema {
                        Schema::Number(numeric) => {
                            let unit =
                                self.unit(owner, &field.co_types, field.element, &field_here, at)?;
                            let channel = format!("{name}_{}", field.name);
                            made.push(channel.clone());
                            self.channel(channel, unit, numeric, &field_here);
                        }
                        Schema::Object(_) => self.left_out(
                            &field_here,
                            "a field that is an Object: channels carry numbers".to_string(),
                        ),
                        Schema::Other(what) => self.left_out(
                            &field_here,
                            format!("a field of {what}: channels carry numbers"),
                        ),
                    }
                }
                if !made.is_empty() {
                    self.assumed(
                        here,
                        format!(
                            "an Object Telemetry: each numeric field is a channel ({})",
                            made.join(", ")
                        ),
                    );
                }
            }
            Schema::Other(what) => {
                self.left_out(
                    here,
                    format!("a Telemetry of {what}: channels carry numbers"),
                );
            }
        }
        Ok(())
    }

    fn channel(&mut self, name: String, unit: String, numeric: Numeric, from: &str) {
        self.ranged.push(name.clone());
        self.channels.push(ChannelDraft {
            name,
            unit,
            range: numeric.span(),
            from: from.to_string(),
        });
    }

    fn property(
        &mut self,
        owner: usize,
        content: &'r Content,
        prefix: &str,
        here: &str,
        at: &str,
    ) -> Result<(), DtdlError> {
        let name = format!("{prefix}{}", content.name);
        let writable = match content.element.get("writable") {
            None => false,
            Some(Json::Bool(writable)) => *writable,
            Some(other) => {
                return Err(self.invalid(
                    owner,
                    at,
                    format!("`writable` is {}, not a boolean", describe(other)),
                ));
            }
        };
        match self.schema_of(owner, &content.element, at)? {
            Schema::Number(numeric) => {
                let unit = self.unit(owner, &content.co_types, &content.element, here, at)?;
                if writable {
                    if numeric != Numeric::Boolean {
                        self.bounded.push(name.clone());
                    }
                    self.desired.push(DesiredDraft {
                        name,
                        prefix: prefix.to_string(),
                        inner: content.name.clone(),
                        kind: numeric.kind(),
                        unit,
                        range: numeric.bounds(),
                        from: here.to_string(),
                    });
                } else {
                    self.read_only.push(name.clone());
                    self.channel(name, unit, numeric, here);
                }
            }
            Schema::Object(_) => self.left_out(
                here,
                "a Property of an Object: desired values and channels are single values"
                    .to_string(),
            ),
            Schema::Other(what) => self.left_out(
                here,
                format!(
                    "a Property of {what}: desired values and channels are numbers or booleans"
                ),
            ),
        }
        Ok(())
    }

    fn command(
        &mut self,
        owner: usize,
        content: &'r Content,
        prefix: &str,
        here: &str,
        at: &str,
    ) -> Result<(), DtdlError> {
        let name = format!("{prefix}{}", content.name);
        let mut params = Vec::new();
        if let Some(request) = content.element.get("request") {
            let Json::Object(request) = request else {
                return Err(self.invalid(
                    owner,
                    at,
                    format!("`request` is {}, not an object", describe(request)),
                ));
            };
            let Some(request_name) = request.get("name").and_then(Json::as_str) else {
                return Err(self.invalid(owner, at, "its request needs a `name`".to_string()));
            };
            if !is_dtdl_name(request_name) {
                return Err(self.invalid(
                    owner,
                    at,
                    format!("request name `{request_name}` is not {NAME_RULE}"),
                ));
            }
            match self.schema_of(owner, request, at)? {
                Schema::Number(numeric) => {
                    let request_types = co_types(request, "CommandRequest")
                        .map_err(|message| self.invalid(owner, at, message))?;
                    let request_here = format!("{here}.{request_name}");
                    let unit = self.unit(owner, &request_types, request, &request_here, at)?;
                    params.push(ParamDraft {
                        name: request_name.to_string(),
                        kind: numeric.kind(),
                        range: numeric.bounds(),
                        unit,
                    });
                }
                Schema::Object(object) => {
                    let fields = self.fields(owner, object, at)?;
                    let not_a_number = fields.iter().find_map(|field| match &field.schema {
                        Schema::Number(_) => None,
                        Schema::Object(_) => Some((field.name, "an Object".to_string())),
                        Schema::Other(what) => Some((field.name, what.clone())),
                    });
                    if let Some((field, what)) = not_a_number {
                        self.left_out(
                            here,
                            format!(
                                "its request field `{field}` is {what}: parameters are numbers or booleans"
                            ),
                        );
                        return Ok(());
                    }
                    for field in fields {
                        let Schema::Number(numeric) = field.schema else {
                            continue;
                        };
                        let field_here = format!("{here}.{}", field.name);
                        let unit =
                            self.unit(owner, &field.co_types, field.element, &field_here, at)?;
                        params.push(ParamDraft {
                            name: field.name.to_string(),
                            kind: numeric.kind(),
                            range: numeric.bounds(),
                            unit,
                        });
                    }
                }
                Schema::Other(what) => {
                    self.left_out(
                        here,
                        format!(
                            "its request `{request_name}` is {what}: parameters are numbers or booleans"
                        ),
                    );
                    return Ok(());
                }
            }
        }
        if content.element.contains_key("response") {
            self.left_out(
                here,
                "its response is left out: a command answers with a verdict".to_string(),
            );
        }
        for param in &params {
            if param.kind != ValueKind::Bool {
                self.bounded.push(format!("{name}.{}", param.name));
            }
        }
        self.commands.push(CommandDraft {
            name,
            params,
            sets: Vec::new(),
            added: false,
            from: here.to_string(),
        });
        Ok(())
    }

    fn relationship(
        &mut self,
        owner: usize,
        content: &'r Content,
        prefix: &str,
        here: &str,
        at: &str,
    ) -> Result<(), DtdlError> {
        let element = &content.element;
        let target = match element.get("target") {
            None => None,
            Some(Json::String(target)) => {
                check_dtmi(target, &self.reader.interfaces[owner].origin)?;
                Some(target.clone())
            }
            Some(other) => {
                return Err(self.invalid(
                    owner,
                    at,
                    format!("`target` is {}, not a DTMI", describe(other)),
                ));
            }
        };
        let multiplicity = |key: &str| match element.get(key) {
            None => Ok(None),
            Some(value) => value.as_u64().map(Some).ok_or_else(|| {
                self.invalid(
                    owner,
                    at,
                    format!("`{key}` must be a whole number, 0 or more"),
                )
            }),
        };
        let min = multiplicity("minMultiplicity")?;
        let max = multiplicity("maxMultiplicity")?;
        let properties = element
            .get("properties")
            .and_then(Json::as_array)
            .map_or(0, Vec::len);
        self.relationships.push(RelationshipHint {
            twin_type: self.name.clone(),
            name: format!("{prefix}{}", content.name),
            target,
            target_type: None,
            min,
            max,
        });
        let mut reason = "twin types have no relationships: kept as a topology hint \
                          (place the twins in plant.toml)"
            .to_string();
        if properties > 0 {
            reason.push_str(&format!("; its {properties} properties are left out"));
        }
        self.left_out(here, reason);
        Ok(())
    }

    fn component(
        &mut self,
        owner: usize,
        content: &'r Content,
        prefix: &str,
        path: &str,
    ) -> Result<(), DtdlError> {
        let reader = self.reader;
        let flat = self.flat;
        let Some(reference) = &content.component else {
            return Ok(());
        };
        let schema = reader.index(reference, owner)?;
        let inner_prefix = format!("{prefix}{}_", content.name);
        let inner_path = format!("{path}{}.", content.name);
        for &(member, index) in &flat[schema] {
            self.map_content(
                member,
                &reader.interfaces[member].contents[index],
                &inner_prefix,
                &inner_path,
            )?;
        }
        Ok(())
    }

    /// The fields of an Object schema, each with what its schema is.
    fn fields(
        &self,
        owner: usize,
        object: &'r Map<String, Json>,
        at: &str,
    ) -> Result<Vec<Field<'r>>, DtdlError> {
        let reader = self.reader;
        let Some(fields) = object.get("fields") else {
            return Ok(Vec::new());
        };
        let Json::Array(items) = fields else {
            return Err(self.invalid(owner, at, "`fields` must be an array".to_string()));
        };
        let mut out = Vec::with_capacity(items.len());
        let mut names = HashSet::new();
        for item in items {
            let Json::Object(element) = item else {
                return Err(self.invalid(
                    owner,
                    at,
                    format!("a field is {}, not an object", describe(item)),
                ));
            };
            let Some(name) = element.get("name").and_then(Json::as_str) else {
                return Err(self.invalid(owner, at, "a field needs a `name`".to_string()));
            };
            if !is_dtdl_name(name) || !names.insert(name) {
                return Err(self.invalid(
                    owner,
                    at,
                    format!("field `{name}` is not {NAME_RULE}, or not unique"),
                ));
            }
            let field_types =
                co_types(element, "Field").map_err(|message| self.invalid(owner, at, message))?;
            let Some(schema) = element.get("schema") else {
                return Err(self.invalid(owner, at, format!("field `{name}` needs a `schema`")));
            };
            out.push(Field {
                name,
                co_types: field_types,
                element,
                schema: reader.schema(owner, schema, at, 1)?,
            });
        }
        Ok(out)
    }

    /// The unit an element's semantic type gives it (empty without one); its other
    /// co-types are reported.
    fn unit(
        &mut self,
        owner: usize,
        co_types: &[String],
        element: &Map<String, Json>,
        here: &str,
        at: &str,
    ) -> Result<String, DtdlError> {
        let quantitative = self.reader.interfaces[owner].quantitative;
        let (semantic, others): (Vec<&String>, Vec<&String>) = co_types
            .iter()
            .partition(|co_type| units::is_semantic_type(co_type));
        for other in others {
            self.left_out(
                here,
                format!("co-type `{other}` has no equivalent in twin types"),
            );
        }
        let unit = element.get("unit");
        if !quantitative {
            for semantic_type in &semantic {
                self.left_out(
                    here,
                    format!(
                        "semantic type `{semantic_type}` needs the context \
                         \"{QUANTITATIVE_TYPES}\": its unit is left out"
                    ),
                );
            }
            if semantic.is_empty() && unit.is_some() {
                self.left_out(here, "`unit` without a semantic type".to_string());
            }
            return Ok(String::new());
        }
        let semantic_type = match semantic.as_slice() {
            [] => {
                if unit.is_some() {
                    self.left_out(here, "`unit` without a semantic type".to_string());
                }
                return Ok(String::new());
            }
            [one] => one.as_str(),
            _ => {
                return Err(self.invalid(owner, at, "more than one semantic type".to_string()));
            }
        };
        let Some(unit) = unit.and_then(Json::as_str) else {
            return Err(self.invalid(
                owner,
                at,
                format!("semantic type `{semantic_type}` needs a `unit`"),
            ));
        };
        match units::doppel_unit(semantic_type, unit) {
            Ok(spelling) => {
                if units::dtdl_unit(spelling)
                    .is_some_and(|exported| exported.semantic_type != semantic_type)
                {
                    self.left_out(
                        here,
                        format!(
                            "semantic type `{semantic_type}` is kept only as its unit `{spelling}`"
                        ),
                    );
                }
                Ok(spelling.to_string())
            }
            Err(UnitProblem::WrongUnit { allowed }) => Err(self.invalid(
                owner,
                at,
                format!("`{unit}` is not a unit of `{semantic_type}` ({allowed})"),
            )),
            Err(UnitProblem::NotSemantic) => Err(self.invalid(
                owner,
                at,
                format!("`{semantic_type}` is not a semantic type"),
            )),
        }
    }
}
