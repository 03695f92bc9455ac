//! Configuration: twin types, the plant topology and runtime settings, from TOML.
//!
//! Every error names the file, the line and what is wrong, e.g.
//! `types.toml:42: type `press`, model `rul`: unknown channel `vibraton``.

mod settings;
mod topology;
mod twin_type;

pub use settings::{DeliverySettings, JournalSettings, RuntimeSettings, SupervisionSettings};
pub use topology::{LineSpec, MachineSpec, PlantSpec, Topology};
pub use twin_type::{
    Aggregates, ChannelSpec, CommandSpec, ComponentSpec, DesiredSpec, ParamSpec, SetSource,
    TwinType, TwinTypes,
};

/// A configuration problem, located in its file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    /// The file (or other origin) the configuration came from.
    pub origin: String,
    /// The 1-based line of the offending item, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// A problem at `line` of `origin`.
    pub fn at(origin: &str, line: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            origin: origin.to_string(),
            line,
            message: message.into(),
        }
    }

    /// Converts a TOML parse error, locating it in `source`.
    pub(crate) fn from_toml(origin: &str, source: &str, error: &toml::de::Error) -> Self {
        let line = error.span().map(|span| line_of(source, span.start));
        Self::at(origin, line, error.message().trim().to_string())
    }
}

/// 1-based line number of byte `offset` in `source`.
pub(crate) fn line_of(source: &str, offset: usize) -> usize {
    let end = offset.min(source.len());
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Reads a configuration file, mapping I/O errors to a located [`ConfigError`].
pub(crate) fn read_file(path: &std::path::Path) -> Result<(String, String), ConfigError> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::at(&origin, None, format!("cannot read: {error}")))?;
    Ok((origin, source))
}
