//! `doppel model keygen|sign|verify` with the real binary: a signed package verifies
//! with its key; an unsigned, tampered or untrusted one is refused with exit status 1
//! and a one-line reason.

use std::path::Path;
use std::process::{Command, Output};

const PACKAGE: &str = r#"
[package]
kind = "degradation"
version = "1.1.0"
params = { channel = "vibration", threshold = 11.0, warn_hours = 24.0 }

[package.metadata]
assumptions = ["bearing wear dominates vibration growth"]
units = { vibration = "mm/s", rul_hours = "h" }
author = "ann"
created = "2026-11-30T12:00:00Z"
"#;

fn doppel(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap()
}

fn fails_with(output: &Output, says: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(says), "expected `{says}` in: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn a_package_signed_with_a_trusted_key_verifies_and_any_change_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("package.toml"), PACKAGE).unwrap();
    let made = doppel(dir, &["model", "keygen", "--out", "models.key"]);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("models.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(
        mode & 0o077,
        0,
        "the signing key is readable by its owner only"
    );
    assert!(
        doppel(dir, &["model", "keygen", "--out", "other.key"])
            .status
            .success()
    );

    // Unsigned: refused.
    let unsigned = doppel(
        dir,
        &[
            "model",
            "verify",
            "package.toml",
            "--trust",
            "models.key.pub",
        ],
    );
    fails_with(&unsigned, "not signed");

    let signed = doppel(
        dir,
        &[
            "model",
            "sign",
            "package.toml",
            "--key",
            "models.key",
            "--out",
            "signed.toml",
        ],
    );
    assert!(
        signed.status.success(),
        "{}",
        String::from_utf8_lossy(&signed.stderr)
    );
    let verified = doppel(
        dir,
        &[
            "model",
            "verify",
            "signed.toml",
            "--trust",
            "models.key.pub",
        ],
    );
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        String::from_utf8_lossy(&verified.stdout)
            .contains("degradation 1.1.0: signed by trusted key")
    );

    // Tampered: a parameter changed after signing.
    let text = std::fs::read_to_string(dir.join("signed.toml")).unwrap();
    let tampered = text.replace("threshold = 11.0", "threshold = 30.0");
    assert_ne!(tampered, text);
    std::fs::write(dir.join("tampered.toml"), tampered).unwrap();
    fails_with(
        &doppel(
            dir,
            &[
                "model",
                "verify",
                "tampered.toml",
                "--trust",
                "models.key.pub",
            ],
        ),
        "changed after signing",
    );

    // Untrusted: signed, but by a key the node does not trust.
    fails_with(
        &doppel(
            dir,
            &["model", "verify", "signed.toml", "--trust", "other.key.pub"],
        ),
        "not trusted",
    );
}
