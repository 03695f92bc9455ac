//! Model packages: a model kind, a version, its parameters and what it assumes, in a
//! TOML file signed with Ed25519 by a key the node trusts.
//!
//! ```toml
//! [package]
//! kind = "degradation"
//! version = "1.1.0"
//! params = { channel = "vibration", threshold = 11.0, warn_hours = 24.0 }
//! compatible_with = ["1.0.0"]   # takes over the saved state of these versions
//!
//! [package.metadata]
//! assumptions = ["bearing wear dominates vibration growth"]
//! units = { vibration = "mm/s", rul_hours = "h" }
//! training_window = { from = "2026-01-01T00:00:00Z", to = "2026-06-30T00:00:00Z" }
//! author = "ann"
//! created = "2026-11-30T12:00:00Z"
//!
//! [signature]
//! key = "…64 hex digits: the signer's public key…"
//! value = "…128 hex digits…"
//! ```
//!
//! The signature covers the `[package]` table in a canonical form (JSON with sorted
//! keys, no whitespace), so reformatting the file or reordering its keys keeps it
//! valid, and any change to what the package says breaks it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::Deserialize;

/// Why a package is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PackageError {
    /// The file is not a package.
    #[error("not a model package: {0}")]
    Malformed(String),
    /// No signature, and unsigned packages are not allowed.
    #[error("the package is not signed (and unsigned packages are not allowed here)")]
    Unsigned,
    /// Signed by a key the node does not trust.
    #[error("the package is signed by key {key}, which is not trusted here")]
    Untrusted {
        /// The signer's public key, hex.
        key: String,
    },
    /// The signature does not match what the package says: it was changed after
    /// signing, or the signature is not the key's.
    #[error("the signature does not match the package: it was changed after signing")]
    Tampered,
}

/// A package's training window.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingWindow {
    /// Start, RFC 3339.
    pub from: String,
    /// End, RFC 3339.
    pub to: String,
}

/// What a package says about its model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageMetadata {
    /// What the model assumes about the machine and its data.
    #[serde(default)]
    pub assumptions: Vec<String>,
    /// Units of its inputs and outputs, by name.
    #[serde(default)]
    pub units: BTreeMap<String, String>,
    /// The data it was fitted on.
    #[serde(default)]
    pub training_window: Option<TrainingWindow>,
    /// Who made it.
    pub author: String,
    /// When, RFC 3339.
    pub created: String,
}

/// A model package: the `[package]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPackage {
    /// The model kind (a registered factory: `degradation`, `thermal`, …).
    pub kind: String,
    /// Its version.
    pub version: String,
    /// The model's parameters, as in a twin type's `[[types.<type>.models]]` entry.
    #[serde(default)]
    pub params: toml::Table,
    /// Versions of the same kind whose saved state this version takes over on an
    /// upgrade; from any other version it starts afresh and warms up from the twin's
    /// history.
    #[serde(default)]
    pub compatible_with: Vec<String>,
    /// What it assumes, its units, training window, author and date.
    pub metadata: PackageMetadata,
}

/// Which packages a node accepts.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// Public keys whose signatures are accepted.
    pub keys: Vec<VerifyingKey>,
    /// Accept packages without a signature (development only).
    pub allow_unsigned: bool,
}

/// Who signed an accepted package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// A trusted key (hex).
    Key(String),
    /// Nobody: accepted because unsigned packages are allowed.
    Unsigned,
}

/// A package as read from its file, before it is trusted.
#[derive(Debug, Clone)]
pub struct PackageFile {
    table: toml::Table,
    package: ModelPackage,
    signature: Option<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureTable {
    key: String,
    value: String,
}

impl PackageFile {
    /// Reads a package file's text.
    pub fn parse(text: &str) -> Result<Self, PackageError> {
        let mut document: toml::Table =
            toml::from_str(text).map_err(|error| PackageError::Malformed(error.to_string()))?;
        let signature = match document.remove("signature") {
            None => None,
            Some(value) => {
                let table: SignatureTable = value
                    .try_into()
                    .map_err(|error| PackageError::Malformed(format!("[signature]: {error}")))?;
                Some((table.key, table.value))
            }
        };
        if let Some(other) = document.keys().find(|key| *key != "package") {
            return Err(PackageError::Malformed(format!(
                "unknown table `{other}`: a package has [package] and [signature]"
            )));
        }
        let table = match document.remove("package") {
            Some(toml::Value::Table(table)) => table,
            _ => return Err(PackageError::Malformed("no [package] table".into())),
        };
        let package: ModelPackage = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|error| PackageError::Malformed(format!("[package]: {error}")))?;
        if package.kind.is_empty() || package.version.is_empty() {
            return Err(PackageError::Malformed(
                "[package]: kind and version must not be empty".into(),
            ));
        }
        Ok(Self {
            table,
            package,
            signature,
        })
    }

    /// The package, not yet verified.
    pub fn package(&self) -> &ModelPackage {
        &self.package
    }

    /// The bytes the signature covers: `[package]` as canonical JSON.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = String::new();
        canonical(&toml::Value::Table(self.table.clone()), &mut out);
        out.into_bytes()
    }

    /// Checks the package against `trust`: signed by a trusted key and unchanged since,
    /// or unsigned where that is allowed.
    pub fn verify(&self, trust: &Trust) -> Result<Signer, PackageError> {
        let Some((key, value)) = &self.signature else {
            return if trust.allow_unsigned {
                Ok(Signer::Unsigned)
            } else {
                Err(PackageError::Unsigned)
            };
        };
        let public = public_key(key).map_err(PackageError::Malformed)?;
        if !trust.keys.contains(&public) {
            return Err(PackageError::Untrusted { key: key.clone() });
        }
        let bytes: [u8; 64] = hex_decode(value)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| PackageError::Malformed("[signature] value: 128 hex digits".into()))?;
        public
            .verify(&self.signed_bytes(), &Signature::from_bytes(&bytes))
            .map_err(|_| PackageError::Tampered)?;
        Ok(Signer::Key(key.clone()))
    }

    /// The package signed with `key`, as file text (`[package]` then `[signature]`).
    pub fn sign(&self, key: &SigningKey) -> String {
        let signature = key.sign(&self.signed_bytes());
        let mut document = toml::Table::new();
        document.insert("package".into(), toml::Value::Table(self.table.clone()));
        let mut table = toml::Table::new();
        table.insert(
            "key".into(),
            toml::Value::String(hex_encode(key.verifying_key().as_bytes())),
        );
        table.insert(
            "value".into(),
            toml::Value::String(hex_encode(&signature.to_bytes())),
        );
        document.insert("signature".into(), toml::Value::Table(table));
        toml::to_string(&document).unwrap_or_default()
    }
}

/// A public key from its hex text.
pub fn public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex_decode(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "a public key is 64 hex digits".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|error| format!("not an Ed25519 public key: {error}"))
}

/// A signing key from its hex text (the secret seed).
pub fn signing_key(text: &str) -> Result<SigningKey, String> {
    let bytes: [u8; 32] = hex_decode(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| "a signing key is 64 hex digits".to_string())?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// Lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// JSON with keys sorted and no whitespace; TOML dates as their text.
fn canonical(value: &toml::Value, out: &mut String) {
    match value {
        toml::Value::String(text) => {
            out.push_str(&serde_json::Value::String(text.clone()).to_string());
        }
        toml::Value::Integer(number) => {
            let _ = write!(out, "{number}");
        }
        toml::Value::Float(number) => {
            out.push_str(&serde_json::Value::from(*number).to_string());
        }
        toml::Value::Boolean(flag) => out.push_str(if *flag { "true" } else { "false" }),
        toml::Value::Datetime(at) => {
            out.push_str(&serde_json::Value::String(at.to_string()).to_string());
        }
        toml::Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        toml::Value::Table(table) => {
            let sorted: BTreeMap<&String, &toml::Value> = table.iter().collect();
            out.push('{');
            for (index, (key, item)) in sorted.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                canonical(item, out);
            }
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKAGE: &str = r#"
[package]
kind = "degradation"
version = "1.1.0"
params = { channel = "vibration", threshold = 11.0, warn_hours = 24.0 }

[package.metadata]
assumptions = ["bearing wear dominates vibration growth"]
units = { vibration = "mm/s", rul_hours = "h" }
training_window = { from = "2026-01-01T00:00:00Z", to = "2026-06-30T00:00:00Z" }
author = "ann"
created = "2026-11-30T12:00:00Z"
"#;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn trusting(key: &SigningKey) -> Trust {
        Trust {
            keys: vec![key.verifying_key()],
            allow_unsigned: false,
        }
    }

    #[test]
    fn a_signed_package_verifies_with_its_key_and_survives_reformatting() {
        let signer = key(7);
        let signed = PackageFile::parse(PACKAGE).unwrap().sign(&signer);
        let file = PackageFile::parse(&signed).unwrap();
        assert_eq!(file.package().kind, "degradation");
        assert_eq!(file.package().metadata.author, "ann");
        assert_eq!(
            file.verify(&trusting(&signer)),
            Ok(Signer::Key(hex_encode(signer.verifying_key().as_bytes())))
        );
        // The same package written as its author wrote it (inline tables, another
        // key order) keeps its signature.
        let signature = &signed[signed.find("[signature]").unwrap()..];
        let reformatted = format!("{PACKAGE}\n{signature}");
        assert!(
            PackageFile::parse(&reformatted)
                .unwrap()
                .verify(&trusting(&signer))
                .is_ok()
        );
    }

    #[test]
    fn unsigned_tampered_and_untrusted_packages_are_refused() {
        let signer = key(7);
        let unsigned = PackageFile::parse(PACKAGE).unwrap();
        assert_eq!(
            unsigned.verify(&trusting(&signer)),
            Err(PackageError::Unsigned)
        );
        let dev = Trust {
            keys: Vec::new(),
            allow_unsigned: true,
        };
        assert_eq!(unsigned.verify(&dev), Ok(Signer::Unsigned));

        let signed = unsigned.sign(&signer);
        let tampered = signed.replace("threshold = 11.0", "threshold = 15.0");
        assert_ne!(tampered, signed);
        assert_eq!(
            PackageFile::parse(&tampered)
                .unwrap()
                .verify(&trusting(&signer)),
            Err(PackageError::Tampered)
        );
        let other = key(9);
        assert!(matches!(
            PackageFile::parse(&signed)
                .unwrap()
                .verify(&trusting(&other)),
            Err(PackageError::Untrusted { .. })
        ));
        // A signed package stays refused by a node that trusts nobody, even where
        // unsigned ones are allowed: a signature from an unknown key is not nothing.
        assert!(matches!(
            PackageFile::parse(&signed).unwrap().verify(&dev),
            Err(PackageError::Untrusted { .. })
        ));
    }

    #[test]
    fn malformed_packages_say_what_is_wrong() {
        for (text, says) in [
            ("kind = 1", "unknown table"),
            ("", "no [package]"),
            ("[package]\nkind = \"x\"", "version"),
            (
                "[package]\nkind = \"x\"\nversion = \"1\"\n[extra]",
                "unknown table",
            ),
            (
                "[package]\nkind = \"x\"\nversion = \"1\"\n[package.metadata]\nauthor = \"a\"\ncreated = \"c\"\n[signature]\nkey = \"zz\"\nvalue = \"00\"",
                "64 hex",
            ),
        ] {
            let error = PackageFile::parse(text)
                .and_then(|file| file.verify(&trusting(&key(1))).map(|_| file))
                .unwrap_err();
            assert!(error.to_string().contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn keys_round_trip_through_hex() {
        let signer = key(3);
        let secret = hex_encode(signer.as_bytes());
        assert_eq!(signing_key(&secret).unwrap().as_bytes(), signer.as_bytes());
        let public = hex_encode(signer.verifying_key().as_bytes());
        assert_eq!(public_key(&public).unwrap(), signer.verifying_key());
        assert!(public_key("abc").is_err());
    }
}
