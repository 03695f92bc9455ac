//! Asset paths: the identity of a twin, validated once at the boundary.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted asset path, in bytes.
pub const MAX_PATH_LEN: usize = 256;
/// Deepest accepted asset path, in segments.
pub const MAX_PATH_DEPTH: usize = 12;

/// Why a string is not a valid [`AssetPath`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty.
    #[error("asset path is empty")]
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`] bytes.
    #[error("asset path is {0} bytes long, the limit is {MAX_PATH_LEN}")]
    TooLong(usize),
    /// The path has more than [`MAX_PATH_DEPTH`] segments.
    #[error("asset path has {0} segments, the limit is {MAX_PATH_DEPTH}")]
    TooDeep(usize),
    /// A segment between two `/` is empty.
    #[error("asset path has an empty segment")]
    EmptySegment,
    /// A character outside `[A-Za-z0-9_.-]` appears in a segment.
    #[error(
        "asset path contains the character {0:?}; allowed are letters, digits, '-', '_' and '.'"
    )]
    BadCharacter(char),
}

/// A validated, hierarchical asset path such as `acme/plant-a/line-1/press-3`.
///
/// Segments are separated by `/`, are non-empty and use letters, digits, `-`, `_`
/// and `.` only. Cloning is cheap (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AssetPath(Arc<str>);

impl AssetPath {
    /// Validates `raw` and returns it as an asset path.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        if raw.len() > MAX_PATH_LEN {
            return Err(PathError::TooLong(raw.len()));
        }
        let mut depth = 0;
        for segment in raw.split('/') {
            depth += 1;
            if segment.is_empty() {
                return Err(PathError::EmptySegment);
            }
            if let Some(bad) = segment
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            {
                return Err(PathError::BadCharacter(bad));
            }
        }
        if depth > MAX_PATH_DEPTH {
            return Err(PathError::TooDeep(depth));
        }
        Ok(Self(Arc::from(raw)))
    }

    /// Appends one segment, validating the result.
    pub fn join(&self, segment: &str) -> Result<Self, PathError> {
        Self::parse(&format!("{}/{}", self.0, segment))
    }

    /// The path as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (the asset's own name).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The path without its last segment, if it has more than one.
    pub fn parent(&self) -> Option<AssetPath> {
        self.0
            .rsplit_once('/')
            .map(|(parent, _)| AssetPath(Arc::from(parent)))
    }

    /// True when `self` equals `prefix` or lies below it.
    pub fn starts_with(&self, prefix: &AssetPath) -> bool {
        self.0.len() >= prefix.0.len()
            && self.0.starts_with(&*prefix.0)
            && (self.0.len() == prefix.0.len() || self.0.as_bytes()[prefix.0.len()] == b'/')
    }
}

impl fmt::Display for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AssetPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::str::FromStr for AssetPath {
    type Err = PathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for AssetPath {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AssetPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        AssetPath::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plant_paths_and_rejects_bad_ones() {
        let path = AssetPath::parse("acme/plant-a/line-1/press-3").unwrap();
        assert_eq!(path.name(), "press-3");
        assert_eq!(path.parent().unwrap().as_str(), "acme/plant-a/line-1");
        assert!(path.starts_with(&AssetPath::parse("acme/plant-a").unwrap()));
        assert!(!path.starts_with(&AssetPath::parse("acme/plant").unwrap()));
        assert_eq!(AssetPath::parse(""), Err(PathError::Empty));
        assert_eq!(AssetPath::parse("a//b"), Err(PathError::EmptySegment));
        assert_eq!(AssetPath::parse("a/b c"), Err(PathError::BadCharacter(' ')));
        assert_eq!(AssetPath::parse("a/#"), Err(PathError::BadCharacter('#')));
        assert!(matches!(
            AssetPath::parse(&"x".repeat(300)),
            Err(PathError::TooLong(300))
        ));
        assert!(matches!(
            AssetPath::parse(&["a"; 13].join("/")),
            Err(PathError::TooDeep(13))
        ));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(raw in ".{0,300}") {
            let _ = AssetPath::parse(&raw);
        }
    }
}
