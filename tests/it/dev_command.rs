//! `doppel dev` runs from a fresh checkout: it shows the plant, a trip and an RUL
//! warning within ten seconds at the default speed.

use std::process::Command;

#[test]
fn doppel_dev_shows_the_plant_a_trip_and_an_rul_warning_in_ten_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["dev", "--duration", "10", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "doppel dev failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("acme/plant-a/line-1"), "{stdout}");
    assert!(stdout.contains("acme/plant-a/line-2"), "{stdout}");
    assert!(
        stdout.contains("SAFETY"),
        "no safety action logged:\n{stdout}"
    );
    assert!(
        stdout.contains("TRIP"),
        "no tripped machine shown:\n{stdout}"
    );
    assert!(stdout.contains("rul_low"), "no RUL warning:\n{stdout}");
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("doppel dev:"),
        "{stdout}"
    );
}
