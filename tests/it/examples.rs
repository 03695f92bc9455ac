//! The examples run as they are.

use std::path::Path;
use std::process::Command;

#[test]
fn embed_example_runs_and_shows_verdicts_and_a_safety_action() {
    let examples = Path::new(env!("CARGO_BIN_EXE_doppel"))
        .parent()
        .unwrap()
        .join("examples");
    let output = Command::new(examples.join("embed"))
        .output()
        .expect("cargo test builds the examples");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("kWh/m3"), "{stdout}");
    assert!(stdout.contains("what-if:"), "{stdout}");
    assert!(
        stdout.contains("command → clamped flow_setpoint=320→250"),
        "{stdout}"
    );
    assert!(
        stdout.contains("safety action: acme/waterworks/intake/pump-1 stop"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("audit #").count(), 3, "{stdout}");
}
