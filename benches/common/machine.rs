//! The benchmark machine type: 20 channels, two desired values, a command, two models
//! and a trip governor. Its own file so a bench with its own allocator can include it.

use std::fmt::Write as _;

/// Channels of the benchmark machine: `ch00` … `ch19`.
pub const CHANNELS: usize = 20;

/// The `machine` type's TOML.
pub fn types_toml() -> String {
    let mut toml = String::from("[types.machine]\ndescription = \"benchmark machine\"\n");
    for channel in 0..CHANNELS {
        let _ = write!(
            toml,
            "[types.machine.channels.ch{channel:02}]\nunit = \"u\"\nrange = [-1000.0, 1000.0]\n"
        );
    }
    toml.push_str(
        r#"
[types.machine.desired.speed]
range = [0, 3000]
initial = 1200
[types.machine.desired.running]
type = "bool"
initial = true
[types.machine.commands.stop]
sets = { running = false }
[[types.machine.models]]
kind = "ewma_anomaly"
channel = "ch00"
[[types.machine.models]]
kind = "thermal"
channel = "ch01"
gain = 0.03
load_desired = "speed"
running_desired = "running"
[[types.machine.governors]]
kind = "trip"
channel = "ch01"
above = 500.0
"#,
    );
    toml
}
