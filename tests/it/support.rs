//! Shared fixtures: a small plant, runtimes on temp dirs, waiting with deadlines.

use std::time::Duration;

use doppel_testkit::{clock, twin_types};

use doppel::{
    AssetPath, Quality, Reading, Runtime, RuntimeSettings, SourceId, Timestamp, Topology, TwinTypes,
};

/// Held by tests whose processes listen on fixed default ports (the shipped cluster
/// example, `doppel dev` without `--grpc`), so they never run at the same time.
pub static DEFAULT_PORTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test press type with its standard models and governors.
pub fn types() -> String {
    twin_types::press()
}

pub use doppel_testkit::process::{signal, wait_for_exit};
pub use doppel_testkit::twin_types::PLANT;
pub use doppel_testkit::wait_until;

pub fn path(raw: &str) -> AssetPath {
    AssetPath::parse(raw).unwrap()
}

pub fn press(n: u32) -> AssetPath {
    path(&twin_types::press_path(n))
}

/// The wall-clock time `age` before now, in RFC 3339 (for text a test writes, such as a
/// model package's dates).
pub fn rfc3339_ago(age: Duration) -> String {
    doppel_api::convert::timestamp_to_proto(ago(age)).to_string()
}

/// The wall-clock time `age` before now: test readings, ranges and deadlines are
/// placed relative to the clock at run time, never on a fixed date.
pub fn ago(age: Duration) -> Timestamp {
    Timestamp(clock::micros_ago(age))
}

/// Settings for tests: short batches.
pub fn settings() -> RuntimeSettings {
    let mut settings = RuntimeSettings::default();
    settings.journal.batch_interval_ms = 2;
    settings
}

pub async fn start(dir: &std::path::Path) -> Runtime {
    start_with(dir, settings(), |b| b).await
}

pub async fn start_with(
    dir: &std::path::Path,
    settings: RuntimeSettings,
    customize: impl FnOnce(doppel::RuntimeBuilder) -> doppel::RuntimeBuilder,
) -> Runtime {
    start_custom(dir, &types(), settings, customize).await
}

pub async fn start_custom(
    dir: &std::path::Path,
    types_toml: &str,
    settings: RuntimeSettings,
    customize: impl FnOnce(doppel::RuntimeBuilder) -> doppel::RuntimeBuilder,
) -> Runtime {
    let types = TwinTypes::from_toml(types_toml, "tests/types.toml").unwrap();
    let topology = Topology::from_toml(PLANT, "tests/plant.toml", &types).unwrap();
    let builder = Runtime::builder()
        .twin_types(types)
        .topology(topology)
        .data_dir(dir)
        .settings(settings);
    customize(builder).start().await.unwrap()
}

pub fn reading(value: f64, source: SourceId, seq: u64) -> Reading {
    Reading {
        value,
        source_time: Timestamp::now(),
        quality: Quality::Good,
        source,
        epoch: 0,
        seq,
        stamped: true,
    }
}

/// Ingests one reading and waits until it is durable, failing the test otherwise.
pub async fn ingest_durable(
    twins: &doppel::Twins,
    path: &AssetPath,
    channel: &str,
    reading: Reading,
) {
    twins
        .ingest(path, channel, reading)
        .await
        .unwrap_or_else(|error| panic!("{path}/{channel} refused: {error}"))
        .durable()
        .await
        .unwrap_or_else(|error| panic!("{path}/{channel} not acknowledged: {error}"));
}

/// A model with a bug: it panics on a reading of exactly 13, to restart a twin for real.
pub struct Fragile;

impl doppel::Model for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    fn version(&self) -> &str {
        "0.0.1"
    }
    fn outputs(&self) -> Vec<String> {
        Vec::new()
    }
    fn observe(
        &mut self,
        sample: &doppel::Sample,
        _twin: &doppel::TwinView<'_>,
        _out: &mut doppel::ModelOutput,
    ) {
        assert!(sample.value != 13.0, "fragile model cannot handle 13");
    }
    fn project(
        &self,
        _twin: &doppel::TwinView<'_>,
        _scenario: &doppel::Scenario,
        _trajectory: &mut doppel::Trajectory,
    ) {
    }
}

pub fn fragile(
    _spec: &doppel::ComponentSpec,
    _type: &doppel::TwinType,
) -> Result<Box<dyn doppel::Model>, doppel::ConfigError> {
    Ok(Box::new(Fragile))
}

/// A test of this binary run as a child process: the `#[ignore]`d test `name` with
/// `env` set, its stdout read line by line on a thread (stderr discarded).
pub struct ChildTest {
    /// The child, to kill.
    pub child: std::process::Child,
    /// Its stdout, a line at a time.
    pub lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<()>,
}

impl ChildTest {
    /// Starts test `name` (its full path, e.g. `crash_safety::crash_child`).
    pub fn start(name: &str, env: &[(&str, String)]) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                name,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            reader,
        }
    }

    /// Waits for the child to exit and its output to be read.
    pub fn wait(mut self) {
        self.child.wait().unwrap();
        self.reader.join().unwrap();
    }
}

/// A gRPC request carrying `token` as a bearer token.
pub fn authed<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// An unsigned package of the press's degradation model as `version`, taking over
/// 1.0.0's state, made a day ago by the clock at run time.
pub fn degradation_package(version: &str) -> String {
    format!(
        r#"
[package]
kind = "degradation"
version = "{version}"
params = {{ channel = "vibration", threshold = 11.0, warn_hours = 24.0, load_desired = "speed" }}
compatible_with = ["1.0.0"]

[package.metadata]
author = "ann"
created = "{}"
"#,
        rfc3339_ago(Duration::from_secs(86_400))
    )
}
