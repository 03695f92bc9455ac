//! A twin type in the making: what the contents of an Interface map to, the setters
//! of its desired values, the defaults it assumes, and its TOML.

use std::collections::HashMap;

use super::note;
use super::read::{Interface, Reader};
use super::resolve::Flat;
use super::toml_text::{comment_text, kind_name, toml_float, toml_key, toml_string, zero};
use crate::config::dtdl::names::{is_setter_of, setter_name};
use crate::config::dtdl::{DtdlError, Gap, RelationshipHint, Unmapped, compatible};
use crate::value::ValueKind;

/// A channel to be.
pub(super) struct ChannelDraft {
    pub(super) name: String,
    pub(super) unit: String,
    pub(super) range: (f64, f64),
    /// The DTDL content it comes from.
    pub(super) from: String,
}

/// A desired value to be.
pub(super) struct DesiredDraft {
    pub(super) name: String,
    /// The Component prefix of `name`.
    pub(super) prefix: String,
    /// `name` without the prefix.
    pub(super) inner: String,
    pub(super) kind: ValueKind,
    pub(super) unit: String,
    pub(super) range: Option<(f64, f64)>,
    pub(super) from: String,
}

/// A command parameter to be.
pub(super) struct ParamDraft {
    pub(super) name: String,
    pub(super) kind: ValueKind,
    pub(super) range: Option<(f64, f64)>,
    pub(super) unit: String,
}

/// A command to be.
pub(super) struct CommandDraft {
    pub(super) name: String,
    pub(super) params: Vec<ParamDraft>,
    /// Desired value and the parameter that sets it.
    pub(super) sets: Vec<(String, String)>,
    /// Whether the import added it to set a writable Property.
    pub(super) added: bool,
    pub(super) from: String,
}

/// A twin type being made of one Interface.
pub(super) struct TypeDraft<'r> {
    pub(super) reader: &'r Reader,
    pub(super) flat: &'r Flat,
    pub(super) root: usize,
    pub(super) interface: &'r Interface,
    pub(super) name: String,
    pub(super) channels: Vec<ChannelDraft>,
    pub(super) desired: Vec<DesiredDraft>,
    pub(super) commands: Vec<CommandDraft>,
    pub(super) relationships: Vec<RelationshipHint>,
    pub(super) report: Vec<Unmapped>,
    /// Channels given their schema's span as plausible range.
    pub(super) ranged: Vec<String>,
    /// Numeric desired values and parameters bounded by their schema.
    pub(super) bounded: Vec<String>,
    /// Read-only Properties made channels.
    pub(super) read_only: Vec<String>,
}

impl<'r> TypeDraft<'r> {
    pub(super) fn new(reader: &'r Reader, flat: &'r Flat, root: usize, name: &str) -> Self {
        Self {
            reader,
            flat,
            root,
            interface: &reader.interfaces[root],
            name: name.to_string(),
            channels: Vec::new(),
            desired: Vec::new(),
            commands: Vec::new(),
            relationships: Vec::new(),
            report: Vec::new(),
            ranged: Vec::new(),
            bounded: Vec::new(),
            read_only: Vec::new(),
        }
    }

    pub(super) fn left_out(&mut self, content: &str, reason: String) {
        self.report
            .push(note(&self.interface.id, content, Gap::LeftOut, reason));
    }

    pub(super) fn assumed(&mut self, content: &str, reason: String) {
        self.report
            .push(note(&self.interface.id, content, Gap::Assumed, reason));
    }

    /// An invalid-element error located in Interface `owner`.
    pub(super) fn invalid(&self, owner: usize, at: &str, message: String) -> DtdlError {
        DtdlError::Invalid {
            origin: self.reader.interfaces[owner].origin.clone(),
            element: at.to_string(),
            message,
        }
    }

    /// Two channels, desired values or commands of one name are an error.
    pub(super) fn check_names(&self) -> Result<(), DtdlError> {
        check_unique(
            &self.name,
            self.channels
                .iter()
                .map(|channel| (channel.name.as_str(), channel.from.as_str())),
        )?;
        check_unique(
            &self.name,
            self.desired
                .iter()
                .map(|desired| (desired.name.as_str(), desired.from.as_str())),
        )?;
        check_unique(
            &self.name,
            self.commands
                .iter()
                .map(|command| (command.name.as_str(), command.from.as_str())),
        )
    }

    /// Gives every desired value a command that sets it: a command named as its setter
    /// with one fitting parameter, or one added for it.
    pub(super) fn link_setters(&mut self) {
        for desired in &self.desired {
            let existing = self.commands.iter_mut().find(|command| {
                command.sets.is_empty()
                    && is_setter_of(&command.name, &desired.name)
                    && matches!(command.params.as_slice(), [param] if compatible(param.kind, desired.kind))
            });
            if let Some(command) = existing {
                let param = command.params[0].name.clone();
                command.sets.push((desired.name.clone(), param));
                continue;
            }
            let name = format!("{}{}", desired.prefix, setter_name(&desired.inner));
            if self.commands.iter().any(|command| command.name == name) {
                self.report.push(note(
                    &self.interface.id,
                    &desired.from,
                    Gap::LeftOut,
                    format!("no command sets it: `{name}` exists with another request"),
                ));
                continue;
            }
            self.commands.push(CommandDraft {
                name,
                params: vec![ParamDraft {
                    name: desired.inner.clone(),
                    kind: desired.kind,
                    range: desired.range,
                    unit: desired.unit.clone(),
                }],
                sets: vec![(desired.name.clone(), desired.inner.clone())],
                added: true,
                from: desired.from.clone(),
            });
        }
    }

    /// Reports, once per type, the defaults that stand in for what DTDL does not say.
    pub(super) fn note_assumptions(&mut self) {
        let ranged = std::mem::take(&mut self.ranged);
        if !ranged.is_empty() {
            self.assumed(
                &ranged.join(", "),
                "DTDL gives no plausible range: each channel's range is its schema's whole \
                 span (narrow it to refuse implausible readings)"
                    .to_string(),
            );
        }
        let read_only = std::mem::take(&mut self.read_only);
        if !read_only.is_empty() {
            self.assumed(
                &read_only.join(", "),
                "a read-only Property is state the machine reports: a channel".to_string(),
            );
        }
        let bounded = std::mem::take(&mut self.bounded);
        if !bounded.is_empty() {
            self.assumed(
                &bounded.join(", "),
                "DTDL gives no bounds: `integer` and `float` values are bounded by their \
                 schema's span, `long` and `double` ones only by their type"
                    .to_string(),
            );
        }
        let desired: Vec<&str> = self.desired.iter().map(|d| d.name.as_str()).collect();
        if !desired.is_empty() {
            let content = desired.join(", ");
            self.assumed(
                &content,
                "DTDL gives no initial value: desired values start at 0 or false".to_string(),
            );
        }
        let added: Vec<&str> = self
            .commands
            .iter()
            .filter(|command| command.added)
            .map(|command| command.name.as_str())
            .collect();
        if !added.is_empty() {
            let content = added.join(", ");
            self.assumed(
                &content,
                "a writable Property is set by a command: added, one per Property".to_string(),
            );
        }
        let inert: Vec<&str> = self
            .commands
            .iter()
            .filter(|command| command.sets.is_empty())
            .map(|command| command.name.as_str())
            .collect();
        if !inert.is_empty() {
            let content = inert.join(", ");
            self.assumed(
                &content,
                "DTDL does not say what a Command changes: these set no desired value".to_string(),
            );
        }
    }

    /// Appends the type to `out` as TOML.
    pub(super) fn render(&self, out: &mut String) {
        out.push('\n');
        out.push_str(&format!("# {}\n", comment_text(&self.interface.id)));
        for hint in &self.relationships {
            out.push_str(&format!("# {}\n", comment_text(&hint.to_string())));
        }
        let table = format!("types.{}", toml_key(&self.name));
        out.push_str(&format!("[{table}]\n"));
        if let Some(title) = &self.interface.title {
            out.push_str(&format!("description = {}\n", toml_string(title)));
        }
        for channel in &self.channels {
            out.push_str(&format!(
                "\n[{table}.channels.{}]\n",
                toml_key(&channel.name)
            ));
            if !channel.unit.is_empty() {
                out.push_str(&format!("unit = {}\n", toml_string(&channel.unit)));
            }
            let (low, high) = channel.range;
            out.push_str(&format!(
                "range = [{}, {}]\n",
                toml_float(low),
                toml_float(high)
            ));
        }
        for desired in &self.desired {
            out.push_str(&format!(
                "\n[{table}.desired.{}]\n",
                toml_key(&desired.name)
            ));
            out.push_str(&format!("type = \"{}\"\n", kind_name(desired.kind)));
            if !desired.unit.is_empty() {
                out.push_str(&format!("unit = {}\n", toml_string(&desired.unit)));
            }
            if let Some((low, high)) = desired.range {
                out.push_str(&format!(
                    "range = [{}, {}]\n",
                    toml_float(low),
                    toml_float(high)
                ));
            }
            out.push_str(&format!("initial = {}\n", zero(desired.kind)));
        }
        for command in &self.commands {
            out.push_str(&format!(
                "\n[{table}.commands.{}]\n",
                toml_key(&command.name)
            ));
            for param in &command.params {
                let mut fields = format!("type = \"{}\"", kind_name(param.kind));
                if let Some((low, high)) = param.range {
                    fields.push_str(&format!(
                        ", min = {}, max = {}",
                        toml_float(low),
                        toml_float(high)
                    ));
                }
                if !param.unit.is_empty() {
                    fields.push_str(&format!(", unit = {}", toml_string(&param.unit)));
                }
                out.push_str(&format!(
                    "params.{} = {{ {fields} }}\n",
                    toml_key(&param.name)
                ));
            }
            if !command.sets.is_empty() {
                let sets: Vec<String> = command
                    .sets
                    .iter()
                    .map(|(desired, param)| {
                        format!("{} = {}", toml_key(desired), toml_string(param))
                    })
                    .collect();
                out.push_str(&format!("sets = {{ {} }}\n", sets.join(", ")));
            }
        }
    }
}

fn check_unique<'a>(
    twin_type: &str,
    names: impl Iterator<Item = (&'a str, &'a str)>,
) -> Result<(), DtdlError> {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for (name, from) in names {
        if let Some(first) = seen.insert(name, from) {
            return Err(DtdlError::NameCollision {
                twin_type: twin_type.to_string(),
                name: name.to_string(),
                first: first.to_string(),
                second: from.to_string(),
            });
        }
    }
    Ok(())
}
