//! `doppel types import-dtdl` and `export-dtdl` on the DTDL fixtures: what cannot be
//! mapped is reported, documents that are not DTDL v3 are refused, a round trip keeps
//! the types, and an imported type runs in `doppel node`: its twin serves and takes
//! commands with typed, bounded parameters.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use doppel::{TwinType, TwinTypes};
use doppel_testkit::net::free_tcp_port;
use doppel_testkit::process::KillOnDrop;
use serde_json::Value as JsonValue;

use crate::cli_twin::{Run, run_doppel};

/// Longest the node may take to serve its API.
const START_LIMIT: Duration = Duration::from_secs(30);

/// One thermostat in one line of one plant.
const PLANT: &str = r#"
[[plant]]
path = "acme/site-1"

[[plant.line]]
name = "hvac"

[[plant.line.machine]]
name = "thermostat-1"
type = "thermostat"
"#;

const THERMOSTAT: &str = "acme/site-1/hvac/thermostat-1";

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/dtdl")
        .join(name)
        .display()
        .to_string()
}

/// `doppel ARGS`, which must succeed.
fn ok(args: &[&str], env: &[(&str, &str)]) -> Run {
    let run = run_doppel(args, env);
    assert_eq!(
        run.code, 0,
        "doppel {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// `doppel ARGS`, which must fail with exit code 1 and one line on stderr saying `says`.
fn refused(args: &[&str], says: &str) {
    let run = run_doppel(args, &[]);
    assert_eq!(run.code, 1, "doppel {args:?}\nstderr:\n{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "not one line:\n{}", run.stderr);
    assert!(
        lines[0].starts_with("doppel: ") && lines[0].contains(says),
        "`{says}` not in: {}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
}

fn channel_names(twin_type: &TwinType) -> Vec<String> {
    twin_type
        .channels
        .iter()
        .map(|channel| channel.name.clone())
        .collect()
}

#[test]
fn import_prints_the_types_and_reports_what_has_no_equivalent() {
    let files: Vec<String> = [
        "temperature_controller.json",
        "thermostat.json",
        "device_information.json",
        "sensor.json",
    ]
    .iter()
    .map(|&name| fixture(name))
    .collect();
    let mut args = vec!["types", "import-dtdl"];
    args.extend(files.iter().map(String::as_str));
    let run = ok(&args, &[]);
    let types = TwinTypes::from_toml(&run.stdout, "stdout")
        .unwrap_or_else(|error| panic!("{error}\n{}", run.stdout));
    let controller = types.get("temperature_controller").unwrap();
    assert!(controller.channel("thermostat2_temperature").is_some());
    assert!(types.get("sensor").is_some());
    assert!(
        types.get("thermostat").is_none(),
        "a Component's Interface is no type of its own"
    );
    for expected in [
        "type temperature_controller from dtmi:com:example:TemperatureController;1",
        "topology hint: temperature_controller: relationship floor",
        "thermostat1.getMaxMinReport: left out",
        "serialNumber: left out",
        "ledState: left out",
        "modules: left out",
        "assumed: DTDL gives no plausible range",
        " left out, ",
    ] {
        assert!(
            run.stderr.contains(expected),
            "`{expected}` missing from:\n{}",
            run.stderr
        );
    }
}

#[test]
fn documents_that_are_not_dtdl_v3_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let a = write(
        "a.json",
        r#"{"@context": "dtmi:dtdl:context;3", "@id": "dtmi:com:example:A;1",
            "@type": "Interface", "extends": "dtmi:com:example:B;1"}"#,
    );
    let b = write(
        "b.json",
        r#"{"@context": "dtmi:dtdl:context;3", "@id": "dtmi:com:example:B;1",
            "@type": "Interface", "extends": "dtmi:com:example:A;1"}"#,
    );
    refused(&["types", "import-dtdl", a.as_str(), b.as_str()], "cycle");
    refused(
        &["types", "import-dtdl", a.as_str()],
        "which none of the documents defines",
    );
    let not_json = write("broken.json", "{");
    refused(&["types", "import-dtdl", not_json.as_str()], "not JSON");
    let version_2 = write(
        "v2.json",
        r#"{"@context": "dtmi:dtdl:context;2", "@id": "dtmi:com:example:A;1", "@type": "Interface"}"#,
    );
    refused(
        &["types", "import-dtdl", version_2.as_str()],
        "dtmi:dtdl:context;3",
    );
    let missing = dir.path().join("missing.json").display().to_string();
    refused(&["types", "import-dtdl", missing.as_str()], "cannot read");
    let types = write(
        "types.toml",
        "[types.press.channels.t]\nrange = [1.0, 0.0]\n",
    );
    refused(&["types", "export-dtdl", types.as_str()], "range must be");
    let usage = run_doppel(&["types", "import-dtdl"], &[]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
}

#[test]
fn exported_types_import_back_with_what_dtdl_says() {
    let dir = tempfile::tempdir().unwrap();
    let types = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node/types.toml");
    let exported = ok(
        &[
            "types",
            "export-dtdl",
            types.to_str().unwrap(),
            "--namespace",
            "dtmi:com:acme:plant",
        ],
        &[],
    );
    let interfaces: JsonValue = serde_json::from_str(&exported.stdout)
        .unwrap_or_else(|error| panic!("{error}\n{}", exported.stdout));
    assert_eq!(interfaces[0]["@id"], "dtmi:com:acme:plant:press;1");
    assert_eq!(interfaces[0]["@context"][0], "dtmi:dtdl:context;3");
    for expected in [
        "press governor overtemp: left out",
        "press model thermal: left out",
        "press channel vibration: left out: unit `mm/s`",
        "press desired running: assumed",
    ] {
        assert!(
            exported.stderr.contains(expected),
            "`{expected}` missing from:\n{}",
            exported.stderr
        );
    }

    let json: PathBuf = dir.path().join("press.json");
    std::fs::write(&json, exported.stdout.as_bytes()).unwrap();
    let imported = ok(&["types", "import-dtdl", json.to_str().unwrap()], &[]);
    let back = TwinTypes::from_toml(&imported.stdout, "stdout")
        .unwrap_or_else(|error| panic!("{error}\n{}", imported.stdout));
    let original = TwinTypes::from_file(types).unwrap();
    let (press, original) = (back.get("press").unwrap(), original.get("press").unwrap());
    assert_eq!(channel_names(press), channel_names(original));
    assert_eq!(
        press.commands["set_speed"].sets,
        original.commands["set_speed"].sets
    );
}

#[test]
fn an_imported_type_runs_in_a_node_and_takes_bounded_commands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let thermostat = fixture("thermostat.json");
    let imported = ok(&["types", "import-dtdl", thermostat.as_str()], &[]);
    std::fs::write(path.join("types.toml"), imported.stdout.as_bytes()).unwrap();
    std::fs::write(path.join("plant.toml"), PLANT).unwrap();
    let port = free_tcp_port();
    let token = "dtdl-import-operator-token-0123456789";
    std::fs::write(
        path.join("node.toml"),
        format!(
            r#"
[node]
data_dir = "data"
types = "types.toml"
plant = "plant.toml"

[api]
listen = "127.0.0.1:{port}"
tokens = [{{ name = "operator", token = "{token}", role = "operator" }}]
"#
        ),
    )
    .unwrap();
    let stderr_path = path.join("node.stderr");
    let node_stderr = || std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let mut node = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_doppel"))
            .args(["node", "--duration", "60", "--config"])
            .arg(path.join("node.toml"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + START_LIMIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = node.0.try_wait() {
            panic!("doppel node exited ({status}):\n{}", node_stderr());
        }
        assert!(
            Instant::now() < deadline,
            "doppel node did not listen on {port} within {START_LIMIT:?}:\n{}",
            node_stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let addr = format!("http://127.0.0.1:{port}");
    let env = [("DOPPEL_ADDR", addr.as_str()), ("DOPPEL_TOKEN", token)];
    let listed = ok(&["twin", "--json", "list"], &env);
    let twins: Vec<JsonValue> = listed
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(twins.len(), 1, "{}", listed.stdout);
    assert_eq!(twins[0]["asset_path"], THERMOSTAT);
    assert_eq!(twins[0]["twin_type"], "thermostat");

    // The setter the import added for the writable Property.
    let command = ok(
        &[
            "twin",
            "--json",
            "command",
            THERMOSTAT,
            "setTargetTemperature",
            "targetTemperature=21.5",
        ],
        &env,
    );
    let outcome: JsonValue = serde_json::from_str(command.stdout.trim()).unwrap();
    assert_eq!(outcome["verdict"]["outcome"], "accepted", "{outcome}");
    assert_eq!(outcome["applied"]["targetTemperature"], 21.5, "{outcome}");
    let got = ok(&["twin", "--json", "get", THERMOSTAT], &env);
    let twin: JsonValue = serde_json::from_str(got.stdout.trim()).unwrap();
    let target = twin["desired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|desired| desired["name"] == "targetTemperature")
        .unwrap_or_else(|| panic!("no desired targetTemperature in {twin:#}"));
    assert_eq!(target["value"], 21.5, "{twin:#}");

    // `boost` takes an `integer`: a value beyond 32 bits is refused by the node.
    let beyond = run_doppel(
        &[
            "twin",
            "command",
            THERMOSTAT,
            "boost",
            "duration=3000000000",
        ],
        &env,
    );
    assert_eq!(beyond.code, 1, "{}", beyond.stderr);
    assert!(beyond.stderr.contains("outside"), "{}", beyond.stderr);
    ok(
        &["twin", "command", THERMOSTAT, "boost", "duration=30"],
        &env,
    );
    drop(node);
}
