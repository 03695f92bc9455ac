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

/// A package deployed to running twins: as a shadow on one press, its outputs and
/// divergence apart; then in production on every press, audited, still running after
/// a restart; then withdrawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployed_package_runs_without_a_restart_and_after_one() {
    use doppel::kernel::model::package::{PackageFile, hex_encode, signing_key};
    use doppel::kernel::model::registry::{DeployMode, Target};
    use doppel::kernel::twin::DeployRequest;
    use doppel::kernel::{AuditKind, Origin, SourceId};

    let dir = tempfile::tempdir().unwrap();
    let key = signing_key(&"42".repeat(32)).unwrap();
    let text = PackageFile::parse(PACKAGE).unwrap().sign(&key);
    let mut settings = crate::support::settings();
    settings.models.trusted_keys = vec![hex_encode(key.verifying_key().as_bytes())];
    let ann = Origin::operator("ann");
    let press1 = crate::support::press(1);
    let press2 = crate::support::press(2);
    let vibration = |twins: doppel::Twins, path: doppel::AssetPath, from: u64| async move {
        for seq in from..from + 5 {
            let reading = crate::support::reading(2.0 + seq as f64 * 0.1, SourceId(1), seq);
            crate::support::ingest_durable(&twins, &path, "vibration", reading).await;
        }
    };
    {
        let runtime = crate::support::start_with(dir.path(), settings.clone(), |b| b).await;
        let twins = runtime.twins().clone();
        assert!(
            twins.register_package(PACKAGE, "ann").is_err(),
            "unsigned is refused"
        );
        let (registered, new) = twins.register_package(&text, "ann").unwrap();
        assert!(new);
        assert_eq!(registered.version, "1.1.0");

        let shadow = twins
            .deploy(
                DeployRequest {
                    kind: "degradation".into(),
                    version: "1.1.0".into(),
                    model: None,
                    target: Target::Prefix(press1.clone()),
                    mode: DeployMode::Shadow,
                    canary: None,
                    evaluation_secs: None,
                },
                &ann,
            )
            .await
            .unwrap();
        assert_eq!(shadow.applied.len(), 1, "{shadow:?}");
        vibration(twins.clone(), press1.clone(), 1).await;
        let shadows = twins.shadows(&press1).await.unwrap();
        assert_eq!(shadows.len(), 1);
        assert_eq!(shadows[0].version, "1.1.0");
        assert_eq!(shadows[0].divergence.samples, 5);
        assert!(twins.shadows(&press2).await.unwrap().is_empty());

        let production = twins
            .deploy(
                DeployRequest {
                    kind: "degradation".into(),
                    version: "1.1.0".into(),
                    model: Some("degradation".into()),
                    target: Target::Type("press".into()),
                    mode: DeployMode::Production,
                    canary: None,
                    evaluation_secs: None,
                },
                &ann,
            )
            .await
            .unwrap();
        assert_eq!(production.applied.len(), presses(&twins), "{production:?}");
        assert!(production.failed.is_empty(), "{production:?}");
        assert_eq!(degradation_version(&twins, &press2).await, "1.1.0");
        let audit = twins
            .audit(
                &press2,
                doppel::Timestamp(i64::MIN),
                doppel::Timestamp(i64::MAX),
                100,
            )
            .unwrap();
        let deployed = audit
            .iter()
            .find(|r| r.kind == AuditKind::ModelDeployment)
            .expect("the swap is audited");
        assert_eq!(deployed.origin.principal, "ann");
        runtime.shutdown().await;
    }
    let runtime = crate::support::start_with(dir.path(), settings, |b| b).await;
    let twins = runtime.twins().clone();
    assert_eq!(
        degradation_version(&twins, &press2).await,
        "1.1.0",
        "the deployment outlives a restart"
    );
    assert_eq!(
        twins.shadows(&press1).await.unwrap()[0].divergence.samples,
        5
    );
    let production = twins.deployments().unwrap()[1].id;
    let withdrawn = twins
        .withdraw(production, "back to the type's", &ann)
        .await
        .unwrap();
    assert_eq!(withdrawn.applied.len(), presses(&twins), "{withdrawn:?}");
    assert!(withdrawn.failed.is_empty(), "{withdrawn:?}");
    assert_ne!(degradation_version(&twins, &press2).await, "1.1.0");
    runtime.shutdown().await;
}

/// How many presses the test plant has.
fn presses(twins: &doppel::Twins) -> usize {
    twins
        .paths()
        .filter(|path| path.as_str().contains("/press-"))
        .count()
}

/// The version of the degradation model the twin at `path` runs.
async fn degradation_version(twins: &doppel::Twins, path: &doppel::AssetPath) -> String {
    let report = twins.report(path).await.unwrap();
    report
        .models
        .into_iter()
        .find(|m| m.name == "degradation")
        .expect("a press has a degradation model")
        .version
}
