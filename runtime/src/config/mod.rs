//! Configuration: twin types, the plant topology and runtime settings, from TOML.
//!
//! Every error names the file, the line and what is wrong, e.g.
//! `types.toml:42: type `press`, model `rul`: unknown channel `vibraton``.

pub mod dtdl;
mod settings;
pub mod toml_text;
mod topology;
mod twin_type;

pub use settings::{
    DeliverySettings, JournalSettings, ModelSettings, PassivationSettings, RuntimeSettings,
    SupervisionSettings,
};
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
    #[cfg(test)]
    SCANNED.with(|scanned| scanned.set(scanned.get() + end));
    source.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
thread_local! {
    /// Bytes [`line_of`] has scanned on this thread: what locating errors costs.
    pub(crate) static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Where each line of a configuration text starts, found in one pass: the line of any
/// offset by binary search.
pub(crate) struct LineStarts(Vec<usize>);

impl LineStarts {
    /// Indexes `source`.
    pub(crate) fn new(source: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(
                source
                    .bytes()
                    .enumerate()
                    .filter(|&(_, b)| b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .collect();
        LineStarts(starts)
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line(&self, offset: usize) -> usize {
        self.0.partition_point(|&start| start <= offset)
    }
}

/// Reads a configuration file, mapping I/O errors to a located [`ConfigError`].
pub(crate) fn read_file(path: &std::path::Path) -> Result<(String, String), ConfigError> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path)
        .map_err(|error| ConfigError::at(&origin, None, format!("cannot read: {error}")))?;
    Ok((origin, source))
}

#[cfg(test)]
mod line_tests {
    use super::*;

    #[test]
    fn line_starts_agree_with_counting_newlines() {
        let source = "a = 1\n\n[b]\nc = \"x\"\nlast";
        let lines = LineStarts::new(source);
        for offset in 0..=source.len() + 3 {
            assert_eq!(
                lines.line(offset),
                line_of(source, offset),
                "offset {offset}"
            );
        }
    }
}
