//! `doppel twin` against a running node: `doppel dev` serving its gRPC API on a loopback
//! port, and the built binary run for every subcommand, in text and as `--json`, with
//! its failures checked for their one line and exit code; and `doppel node` serving the
//! API over TLS with a certificate from a private CA.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use doppel_testkit::process::KillOnDrop;
use doppel_testkit::tls::CertificateAuthority;
use serde_json::Value as JsonValue;

use crate::brokers::free_port;
use crate::support::{self, signal};

/// Longest any single `doppel twin` run may take before the test kills it.
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Longest the node may take to serve its API.
const START_LIMIT: Duration = Duration::from_secs(30);

/// A `doppel dev` child process serving the gRPC API on a free loopback port, killed
/// when dropped.
struct DevNode {
    /// The `doppel dev` process.
    child: Child,
    /// Its API's URL.
    addr: String,
    /// The admin token it wrote to its data directory.
    token: String,
    /// Where its stderr goes.
    stderr_path: PathBuf,
    /// Its data directory.
    dir: tempfile::TempDir,
}

impl DevNode {
    /// Starts the node and waits until its API accepts connections and its dev token
    /// is on disk.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let stderr_path = dir.path().join("dev.stderr");
        let child = Command::new(env!("CARGO_BIN_EXE_doppel"))
            .args([
                "dev",
                "--grpc",
                &format!("127.0.0.1:{port}"),
                "--mqtt-port",
                "0",
                "--duration",
                "60",
                "--data-dir",
            ])
            .arg(dir.path())
            // The plain-text view is printed every two seconds; nobody reads it here,
            // and an unread pipe would stall the node once full.
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let mut node = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token: String::new(),
            stderr_path,
            dir,
        };
        let token_path = node.dir.path().join("dev-token");
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("doppel dev exited early ({status}):\n{}", node.stderr());
            }
            let token = std::fs::read_to_string(&token_path).unwrap_or_default();
            if token.trim().len() >= 16 && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            {
                node.token = token.trim().to_string();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "doppel dev did not serve its API within {START_LIMIT:?}:\n{}",
                node.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        node
    }

    /// What the node wrote to stderr so far, for failure messages.
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// `doppel twin ARGS` against this node (address and token from the
    /// environment, as a user would set them).
    fn twin(&self, args: &[&str]) -> Run {
        run_twin(
            args,
            &[("DOPPEL_ADDR", &self.addr), ("DOPPEL_TOKEN", &self.token)],
        )
    }

    /// `doppel alarm ARGS` against this node.
    fn alarm(&self, args: &[&str]) -> Run {
        let args: Vec<&str> = std::iter::once("alarm")
            .chain(args.iter().copied())
            .collect();
        run_doppel(
            &args,
            &[("DOPPEL_ADDR", &self.addr), ("DOPPEL_TOKEN", &self.token)],
        )
    }

    /// `doppel model ARGS` against this node, which must succeed.
    fn model(&self, args: &[&str]) -> Run {
        let args: Vec<&str> = std::iter::once("model")
            .chain(args.iter().copied())
            .collect();
        let run = run_doppel(
            &args,
            &[("DOPPEL_ADDR", &self.addr), ("DOPPEL_TOKEN", &self.token)],
        );
        assert_eq!(
            run.code,
            0,
            "doppel {args:?} failed\nstdout:\n{}\nstderr:\n{}\nnode:\n{}",
            run.stdout,
            run.stderr,
            self.stderr()
        );
        run
    }

    /// `doppel twin ARGS` that must succeed.
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.twin(args);
        assert_eq!(
            run.code,
            0,
            "doppel twin {args:?} failed\nstdout:\n{}\nstderr:\n{}\nnode:\n{}",
            run.stdout,
            run.stderr,
            self.stderr()
        );
        run
    }

    /// `doppel twin --json ARGS` that must succeed, its lines parsed as JSON.
    fn json(&self, args: &[&str]) -> Vec<JsonValue> {
        let mut argv = vec!["--json"];
        argv.extend_from_slice(args);
        self.ok(&argv).json_lines()
    }

    /// Polls `get --json PATH` until `condition` holds for the twin, or panics after
    /// `limit`.
    fn wait_for_twin(
        &self,
        path: &str,
        what: &str,
        limit: Duration,
        condition: impl Fn(&JsonValue) -> bool,
    ) -> JsonValue {
        let deadline = Instant::now() + limit;
        loop {
            let twin = self.json(&["get", path]).remove(0);
            if condition(&twin) {
                return twin;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {what} not seen within {limit:?}; last:\n{twin:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One finished `doppel twin` run.
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// Every stdout line parsed as one JSON value.
    fn json_lines(&self) -> Vec<JsonValue> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not one JSON value per line ({e}): {line}"))
            })
            .collect()
    }

    /// Asserts a failure: this exit code and exactly one stderr line starting with
    /// `doppel: ` and containing `says`.
    fn assert_fails(&self, code: i32, says: &str) {
        assert_eq!(
            self.code, code,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "not one line:\n{}", self.stderr);
        assert!(lines[0].starts_with("doppel: "), "{}", self.stderr);
        assert!(lines[0].contains(says), "`{says}` not in: {}", self.stderr);
        assert!(self.stdout.is_empty(), "{}", self.stdout);
    }
}

/// Runs the built binary's `twin` subcommand with only `env` set of the `DOPPEL_*`
/// and `SSL_CERT_FILE` variables; kills it if it outlives [`RUN_LIMIT`].
fn run_twin(args: &[&str], env: &[(&str, &str)]) -> Run {
    let args: Vec<&str> = std::iter::once("twin")
        .chain(args.iter().copied())
        .collect();
    run_doppel(&args, env)
}

/// Runs the built binary with `args` and only `env` set of the `DOPPEL_*` and
/// `SSL_CERT_FILE` variables; kills it if it outlives [`RUN_LIMIT`].
pub fn run_doppel(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_doppel"));
    command
        .args(args)
        .env_remove("DOPPEL_ADDR")
        .env_remove("DOPPEL_TOKEN")
        .env_remove("SSL_CERT_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output: Output = match result.recv_timeout(RUN_LIMIT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            signal(pid, "KILL");
            panic!("doppel {args:?} still running after {RUN_LIMIT:?}");
        }
    };
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The value of desired value `name` in a `get --json` twin.
fn desired(twin: &JsonValue, name: &str) -> JsonValue {
    twin["desired"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no desired `{name}` in {twin:#}"))["value"]
        .clone()
}

#[test]
fn list_get_history_and_audit_read_the_node() {
    let node = DevNode::start();

    // Every twin, across pages of three.
    let all = node.json(&["list", "--page-size", "3", "--all"]);
    let paths: Vec<&str> = all
        .iter()
        .map(|t| t["asset_path"].as_str().unwrap())
        .collect();
    assert_eq!(paths.len(), 10, "{paths:?}");
    assert_eq!(paths[0], "acme/plant-a/line-1/press-1");
    assert!(paths.windows(2).all(|w| w[0] < w[1]), "{paths:?}");
    for twin in &all {
        assert!(
            twin["twin_type"] == "press" || twin["twin_type"] == "pump",
            "{twin}"
        );
        assert!(
            twin["version"].is_u64() && twin["health"].is_number(),
            "{twin}"
        );
        assert!(
            twin["run_state"].is_string() && twin["alarm_count"].is_u64(),
            "{twin}"
        );
    }

    // One page without --all: three rows and a note on stderr about the rest.
    let page = node.ok(&["list", "--page-size", "3"]);
    let lines: Vec<&str> = page.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", page.stdout);
    assert!(
        lines[0].starts_with("PATH") && lines[0].contains("HEALTH"),
        "{}",
        page.stdout
    );
    assert!(
        lines[1].starts_with("acme/plant-a/line-1/press-1  press"),
        "{}",
        page.stdout
    );
    assert!(
        page.stderr
            .starts_with("doppel: more twins follow: add --all, or --page-token "),
        "{}",
        page.stderr
    );

    // A prefix and a type.
    let pumps = node.json(&["list", "acme/plant-a/line-2", "--type", "pump"]);
    let pumps: Vec<&str> = pumps
        .iter()
        .map(|t| t["asset_path"].as_str().unwrap())
        .collect();
    assert_eq!(
        pumps,
        ["acme/plant-a/line-2/pump-3", "acme/plant-a/line-2/pump-4"]
    );
    let none = node.ok(&["list", "acme/plant-b"]);
    assert_eq!(none.stdout, "no twins\n");
    assert!(node.json(&["list", "acme/plant-b"]).is_empty());

    // One twin, once its temperature arrived.
    let press = "acme/plant-a/line-1/press-1";
    let twin = node.wait_for_twin(press, "a temperature", Duration::from_secs(10), |t| {
        t["reported"].as_array().is_some_and(|r| {
            r.iter()
                .any(|c| c["channel"] == "temperature" && c["value"].is_number())
        })
    });
    assert_eq!(twin["asset_path"], press);
    assert_eq!(twin["twin_type"], "press");
    assert_eq!(desired(&twin, "running"), true);
    assert!(desired(&twin, "speed").is_number(), "{twin:#}");
    assert!(!twin["models"].as_array().unwrap().is_empty(), "{twin:#}");
    let text = node.ok(&["get", press]).stdout;
    assert!(
        text.starts_with(&format!("{press}\n  type     press\n")),
        "{text}"
    );
    for expected in [
        "  state    ",
        "  health   ",
        "REPORTED",
        "temperature",
        "DESIRED",
        "speed",
    ] {
        assert!(text.contains(expected), "`{expected}` missing:\n{text}");
    }

    // History: the newest samples of the last minute, oldest first.
    let samples = node.json(&[
        "history",
        press,
        "temperature",
        "--since",
        "1m",
        "--limit",
        "5",
    ]);
    assert!(!samples.is_empty() && samples.len() <= 5, "{samples:?}");
    let times: Vec<&str> = samples
        .iter()
        .map(|s| s["source_time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(
        samples
            .iter()
            .all(|s| s["value"].is_number() && s["quality"] == "good")
    );
    let text = node
        .ok(&[
            "history",
            press,
            "temperature",
            "--since",
            "1m",
            "--limit",
            "3",
        ])
        .stdout;
    assert!(text.starts_with("SOURCE TIME"), "{text}");
    // A header and one to three samples (the node has run for only a second or two).
    assert!((2..=4).contains(&text.lines().count()), "{text}");
    // A day that ended a day before the node started holds nothing.
    let from = support::ago(Duration::from_secs(2 * 86_400)).to_rfc3339();
    let to = support::ago(Duration::from_secs(86_400)).to_rfc3339();
    let past = node.ok(&[
        "history",
        press,
        "temperature",
        "--from",
        &from,
        "--to",
        &to,
    ]);
    assert_eq!(past.stdout, "no samples\n");

    // Audit: a command shows up under its line, in text and JSON.
    node.ok(&["command", press, "set_speed", "rpm=1300"]);
    let records = node.json(&["audit", "acme/plant-a/line-1", "--all", "--since", "1h"]);
    let record = records
        .iter()
        .find(|r| r["command"] == "set_speed" && r["asset_path"] == press)
        .unwrap_or_else(|| panic!("no set_speed record: {records:?}"));
    assert_eq!(record["kind"], "command");
    assert_eq!(record["requested"]["rpm"], 1300);
    assert!(record["verdict"]["outcome"].is_string(), "{record}");
    assert!(
        record["seq"].is_u64() && record["at"].is_string(),
        "{record}"
    );
    let text = node.ok(&["audit", "acme/plant-a/line-1"]).stdout;
    assert!(text.starts_with("SEQ"), "{text}");
    assert!(
        text.contains("set_speed") && text.contains("rpm=1300"),
        "{text}"
    );
    assert_eq!(
        node.ok(&["audit", "acme/plant-b"]).stdout,
        "no audit records\n"
    );
}

#[test]
fn commands_print_their_verdict_and_simulations_change_nothing() {
    let node = DevNode::start();
    let press = "acme/plant-a/line-1/press-3";

    // Above the envelope: clamped, with the value applied.
    let text = node.ok(&["command", press, "set_speed", "rpm=3000"]).stdout;
    assert!(text.starts_with("clamped: speed 3000 → "), "{text}");
    assert!(text.contains("  applied  speed="), "{text}");
    let outcome = &node.json(&["command", press, "set_speed", "rpm=2900"])[0];
    assert_eq!(outcome["verdict"]["outcome"], "clamped", "{outcome}");
    // The envelope clamps to its maximum; the rate limit may clamp further.
    let clamps = outcome["verdict"]["clamps"].as_array().unwrap();
    assert_eq!(clamps[0]["desired"], "speed", "{outcome}");
    assert_eq!(clamps[0]["requested"], 2900.0, "{outcome}");
    assert_eq!(clamps[0]["governor"], "envelope", "{outcome}");
    let applied = outcome["applied"]["speed"].as_f64().unwrap();
    assert!(applied <= 2400.0, "{outcome}");
    assert_eq!(
        clamps.last().unwrap()["applied"].as_f64(),
        Some(applied),
        "{outcome}"
    );
    assert!(
        outcome["version"].is_u64() && outcome["audit_seq"].is_u64(),
        "{outcome}"
    );
    assert_eq!(outcome["replayed"], false);

    // Within limits: accepted.
    let stop = &node.json(&["command", press, "stop"])[0];
    assert_eq!(stop["verdict"]["outcome"], "accepted", "{stop}");
    assert_eq!(stop["applied"]["running"], false, "{stop}");
    let text = node.ok(&["command", press, "start"]).stdout;
    assert!(
        text.starts_with("accepted\n  applied  running=true\n"),
        "{text}"
    );

    // The same idempotency key twice: the first outcome again, not a second command.
    let first = &node.json(&[
        "command",
        press,
        "set_speed",
        "rpm=1250",
        "--idempotency-key",
        "cli-k1",
    ])[0];
    let again = &node.json(&[
        "command",
        press,
        "set_speed",
        "rpm=1250",
        "--idempotency-key",
        "cli-k1",
    ])[0];
    assert_eq!(first["replayed"], false, "{first}");
    assert_eq!(again["replayed"], true, "{again}");
    assert_eq!(first["command_id"], again["command_id"], "{first}\n{again}");
    assert_eq!(first["verdict"], again["verdict"], "{first}\n{again}");
    assert_eq!(first["applied"], again["applied"], "{first}\n{again}");
    let text = node
        .ok(&[
            "command",
            press,
            "set_speed",
            "rpm=1250",
            "--idempotency-key",
            "cli-k1",
            "--deadline-secs",
            "5",
        ])
        .stdout;
    assert!(text.contains("replayed"), "{text}");

    // What-if: a verdict and a projection, and the twin's desired speed unchanged.
    let before = desired(&node.json(&["get", press])[0], "speed");
    let simulation = &node.json(&[
        "simulate",
        press,
        "set_speed",
        "rpm=2000",
        "--horizon",
        "10m",
        "--step",
        "1m",
    ])[0];
    assert!(simulation["verdict"]["outcome"].is_string(), "{simulation}");
    assert!(simulation["assumed"]["speed"].is_number(), "{simulation}");
    let series = simulation["series"].as_array().unwrap();
    assert!(!series.is_empty(), "{simulation}");
    let temperature = series
        .iter()
        .find(|s| s["name"] == "temperature")
        .unwrap_or_else(|| panic!("no temperature projection: {simulation}"));
    let points = temperature["points"].as_array().unwrap();
    assert!(points.len() >= 2, "{simulation}");
    assert!(
        points
            .iter()
            .all(|p| p["t"].is_number() && p["value"].is_number())
    );
    let text = node
        .ok(&[
            "simulate",
            press,
            "set_speed",
            "rpm=2000",
            "--horizon",
            "10m",
            "--step",
            "2m",
        ])
        .stdout;
    assert!(text.starts_with("verdict  "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("assumes  ") && l.contains("speed=")),
        "{text}"
    );
    let header = text
        .lines()
        .find(|l| l.trim_start().starts_with("T  "))
        .unwrap_or_else(|| panic!("no projection table:\n{text}"));
    assert!(header.contains("temperature"), "{text}");
    assert!(text.contains("+2m") && text.contains("+10m"), "{text}");
    let after = desired(&node.json(&["get", press])[0], "speed");
    assert_eq!(before, after, "simulate changed the twin");

    // A denial is an answer, not a failure: the coolant loss trips press-4, whose
    // trip governor then refuses to start it.
    let hot = "acme/plant-a/line-2/press-4";
    node.wait_for_twin(hot, "the trip", Duration::from_secs(30), |t| {
        t["run_state"] == "tripped"
    });
    let denied = node.twin(&["command", hot, "start"]);
    assert_eq!(denied.code, 0, "{}", denied.stderr);
    assert!(denied.stdout.starts_with("denied ("), "{}", denied.stdout);
    let denied = &node.json(&["command", hot, "start"])[0];
    assert_eq!(denied["verdict"]["outcome"], "denied", "{denied}");
    assert!(denied["verdict"]["governor"].is_string(), "{denied}");
    assert!(
        !denied["verdict"]["reason"].as_str().unwrap().is_empty(),
        "{denied}"
    );

    // The trip's alarm: listed unacknowledged, never shelved, acknowledged once.
    let listed = node.alarm(&["list", hot, "--standing", "--json"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let trip = listed
        .json_lines()
        .into_iter()
        .find(|a| a["code"].as_str().unwrap().starts_with("trip:"))
        .unwrap_or_else(|| panic!("no trip alarm listed:\n{}", listed.stdout));
    assert_eq!(trip["state"], "unacknowledged", "{trip}");
    assert_eq!(trip["asset_path"], hot, "{trip}");
    let code = trip["code"].as_str().unwrap();
    let shelved = node.alarm(&["shelve", hot, code, "--for", "1h", "--reason", "nuisance"]);
    assert_eq!(shelved.code, 1, "{}", shelved.stdout);
    assert!(
        shelved.stderr.contains("latched trip"),
        "{}",
        shelved.stderr
    );
    let acked = node.alarm(&["ack", hot, code, "--note", "crew on the way"]);
    assert_eq!(acked.code, 0, "{}", acked.stderr);
    assert!(
        acked
            .stdout
            .starts_with(&format!("{hot} {code}: acknowledged (audit #")),
        "{}",
        acked.stdout
    );
    let text = node.alarm(&["list", hot]);
    assert!(text.stdout.contains("acknowledged"), "{}", text.stdout);
}

#[test]
fn watch_prints_the_snapshot_then_changes_in_order() {
    let node = DevNode::start();
    let press = "acme/plant-a/line-1/press-2";

    let events = node.json(&["watch", press, "--duration", "2s"]);
    assert!(events.len() >= 3, "{events:?}");
    assert_eq!(events[0]["event"], "snapshot", "{}", events[0]);
    assert_eq!(events[0]["twin"]["asset_path"], press);
    assert_eq!(events[1]["event"], "snapshot_complete", "{}", events[1]);
    assert_eq!(events[1]["twins"], 1);
    let mut version = events[0]["twin"]["version"].as_u64().unwrap();
    for change in &events[2..] {
        assert_eq!(change["event"], "change", "{change}");
        assert_eq!(change["asset_path"], press, "{change}");
        let next = change["version"].as_u64().unwrap();
        assert!(next > version, "version {next} after {version}: {change}");
        version = next;
        assert!(change["kind"].is_string(), "{change}");
    }
    assert!(
        events[2..]
            .iter()
            .any(|c| c["kind"] == "reported" && c["value"].is_number()),
        "no reported change in {events:?}"
    );

    // In text, until Ctrl-C: the snapshot table, the marker, then change lines; a
    // command sent meanwhile shows up as a desired change; SIGINT ends it with 0.
    let mut child = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["twin", "watch", press])
        .env("DOPPEL_ADDR", &node.addr)
        .env("DOPPEL_TOKEN", &node.token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |what: &str, matches: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = matches(&line);
                    seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    signal(pid, "KILL");
                    panic!("{what} not seen; watch printed:\n{}", seen.join("\n"));
                }
            }
        }
    };
    wait_for("the marker", &|line| {
        line.starts_with("-- 1 twin; changes follow")
    });
    node.ok(&["command", press, "set_speed", "rpm=1100"]);
    wait_for("the desired change", &|line| {
        line.contains(press) && line.ends_with("desired speed=1100")
    });
    assert!(seen[0].starts_with("PATH"), "{}", seen.join("\n"));
    assert!(seen[1].starts_with(press), "{}", seen.join("\n"));
    signal(pid, "INT");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            signal(pid, "KILL");
            panic!("watch did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "watch after SIGINT: {status}");
}

#[test]
fn failures_are_one_line_with_an_exit_code() {
    let node = DevNode::start();

    // The node says no: exit 1, the call, the code in words, the node's message.
    node.twin(&["get", "acme/plant-a/line-9/press-1"])
        .assert_fails(1, "doppel: get acme/plant-a/line-9/press-1: not found: ");
    node.twin(&["command", "acme/plant-a/line-9/press-1", "stop"])
        .assert_fails(1, "not found");
    node.twin(&["command", "acme/plant-a/line-1/press-1", "fly"])
        .assert_fails(1, "not found");
    node.twin(&["get", "acme//press-1"])
        .assert_fails(1, "invalid argument");
    node.twin(&[
        "--json",
        "history",
        "acme/plant-a/line-1/press-1",
        "no_such_channel",
    ])
    .assert_fails(
        1,
        "doppel: history of acme/plant-a/line-1/press-1 no_such_channel: ",
    );

    // A wrong token, and none at all.
    node.twin(&["list", "--token", "not-the-token-of-this-node"])
        .assert_fails(1, "doppel: list twins: unauthenticated");
    run_twin(&["list"], &[("DOPPEL_ADDR", &node.addr)]).assert_fails(1, "unauthenticated");

    // A wrong command line: exit 2, nothing sent.
    node.twin(&["command", "acme/plant-a/line-1/press-1", "set_speed", "rpm"])
        .assert_fails(2, "doppel: bad parameter `rpm`: expected NAME=VALUE");
    node.twin(&[
        "command",
        "acme/plant-a/line-1/press-1",
        "set_speed",
        "rpm=fast",
    ])
    .assert_fails(2, "`fast` is not true, false, an integer or a number");
    node.twin(&[
        "history",
        "acme/plant-a/line-1/press-1",
        "temperature",
        "--since",
        "an hour",
    ])
    .assert_fails(2, "--since `an hour`");
    node.twin(&["audit", "--from", "2026-13-01T00:00:00Z"])
        .assert_fails(2, "--from `2026-13-01T00:00:00Z`");
    let clap = node.twin(&["get"]);
    assert_eq!(clap.code, 2, "{}", clap.stderr);

    // Nobody there: exit 1, saying where it tried.
    let port = free_port();
    let addr = format!("http://127.0.0.1:{port}");
    run_twin(&["list", "--timeout", "5"], &[("DOPPEL_ADDR", &addr)])
        .assert_fails(1, &format!("doppel: cannot connect to {addr}: "));

    // The node still answers after all that.
    assert_eq!(node.json(&["list"]).len(), 10);
}

#[test]
fn https_addresses_verify_the_node_against_the_given_roots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    // A private CA, a certificate it signs for 127.0.0.1, and an unrelated CA.
    let ca = CertificateAuthority::new("ca");
    ca.write_certificate(&path.join("ca.pem"));
    CertificateAuthority::new("other-ca").write_certificate(&path.join("other-ca.pem"));
    ca.issue("127.0.0.1", &["127.0.0.1"]).write(path, "api");

    // A node from a config file, serving the API over TLS on a free loopback port.
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/node");
    for file in ["types.toml", "plant.toml"] {
        std::fs::copy(example.join(file), path.join(file)).unwrap();
    }
    let port = free_port();
    let token = "cli-twin-tls-viewer-token-0123456789";
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
tokens = [{{ name = "viewer", token = "{token}", role = "viewer" }}]
tls = {{ cert = "api.pem", key = "api.key" }}
"#
        ),
    )
    .unwrap();
    let stderr_path = path.join("node.stderr");
    let node = KillOnDrop(
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
        assert!(
            Instant::now() < deadline,
            "doppel node did not listen on {port}:\n{}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let https = format!("https://127.0.0.1:{port}");
    let ca = path.join("ca.pem");
    let ca = ca.to_str().unwrap();
    let env = [("DOPPEL_ADDR", https.as_str()), ("DOPPEL_TOKEN", token)];

    // Trusting the private CA with --ca, or through SSL_CERT_FILE.
    let listed = run_twin(&["--json", "list", "--ca", ca], &env);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
    let twins = listed.json_lines();
    assert_eq!(twins.len(), 3, "{}", listed.stdout);
    assert_eq!(twins[0]["asset_path"], "acme/plant-a/line-1/press-1");
    let via_env = run_twin(
        &["get", "acme/plant-a/line-2/press-3"],
        &[env[0], env[1], ("SSL_CERT_FILE", ca)],
    );
    assert_eq!(via_env.code, 0, "{}", via_env.stderr);
    assert!(via_env.stdout.starts_with("acme/plant-a/line-2/press-3\n"));

    // Trusting another CA: the node's certificate is refused.
    let other = path.join("other-ca.pem");
    run_twin(&["list", "--ca", other.to_str().unwrap()], &env)
        .assert_fails(1, "invalid peer certificate: UnknownIssuer");
    run_twin(
        &["list"],
        &[env[0], env[1], ("SSL_CERT_FILE", other.to_str().unwrap())],
    )
    .assert_fails(1, "cannot connect");

    // Plain HTTP/2 to a TLS port, and --ca with a plain address.
    let http = format!("http://127.0.0.1:{port}");
    let plain = run_twin(
        &["list", "--timeout", "5"],
        &[("DOPPEL_ADDR", &http), env[1]],
    );
    assert_eq!(plain.code, 1, "{}", plain.stderr);
    assert_eq!(plain.stderr.lines().count(), 1, "{}", plain.stderr);
    run_twin(&["list", "--ca", ca], &[("DOPPEL_ADDR", &http), env[1]])
        .assert_fails(2, "--ca: only used with an https:// address");
    drop(node);
}

/// The dev plant's second degradation package, through the CLI as the README walks
/// through it: listed, deployed as a shadow to the presses of line 2 with its
/// divergence, then as a canary on one press per line, promoted to every press.
#[test]
fn the_dev_plant_ships_a_second_degradation_package_for_shadow_canary_and_promote() {
    let node = DevNode::start();
    let listed = node.model(&["list"]);
    assert!(
        listed.stdout.contains("degradation") && listed.stdout.contains("1.1.0"),
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains("unsigned"), "{}", listed.stdout);
    let shown = node.model(&["show", "degradation@1.1.0"]);
    assert!(
        shown.stdout.contains("compatible with  1.0.0"),
        "{}",
        shown.stdout
    );

    let shadow = node.model(&[
        "deploy",
        "degradation@1.1.0",
        "--type",
        "press",
        "--to",
        "acme/plant-a/line-2",
        "--mode",
        "shadow",
    ]);
    assert!(
        shadow
            .stdout
            .starts_with("deployment 1: degradation@1.1.0 as shadow"),
        "{}",
        shadow.stdout
    );
    assert!(
        shadow.stdout.contains("3 twin(s) changed"),
        "{}",
        shadow.stdout
    );
    // The simulator feeds every press ten readings a second: the shadow compares.
    let deadline = Instant::now() + RUN_LIMIT;
    let fleet = loop {
        let run = node.model(&["divergence", "1", "--json"]);
        let answer: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        let fleet = answer["fleet"].clone();
        if fleet["samples"].as_u64().unwrap_or(0) > 0 {
            break fleet;
        }
        assert!(Instant::now() < deadline, "no divergence figures: {answer}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(fleet["twins"], 3, "{fleet}");
    let twin = node.ok(&["get", "acme/plant-a/line-2/press-4", "--json"]);
    let twin: serde_json::Value = serde_json::from_str(twin.stdout.trim()).unwrap();
    assert_eq!(twin["shadows"][0]["version"], "1.1.0", "{twin}");
    let press1 = node.ok(&["get", "acme/plant-a/line-1/press-1", "--json"]);
    assert!(
        press1.stdout.contains("\"shadows\":[]"),
        "{}",
        press1.stdout
    );

    let canary = node.model(&[
        "deploy",
        "degradation@1.1.0",
        "--to",
        "press",
        "--mode",
        "canary",
        "--fraction",
        "0.5",
        "--window",
        "1h",
        "--max-alarm-increase",
        "1000",
    ]);
    assert!(
        canary.stdout.contains("canary running on 2 twin(s)"),
        "{}",
        canary.stdout
    );
    let promoted = node.model(&["promote", "2", "--reason", "held for a shift"]);
    assert!(
        promoted.stdout.contains("6 twin(s) changed"),
        "every press runs it: {}",
        promoted.stdout
    );
    let deployments = node.model(&["deployments", "--json"]);
    let lines: Vec<serde_json::Value> = deployments
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines[1]["rollout"]["state"], "promoted", "{lines:?}");
    let production = &lines[2];
    assert_eq!(
        (production["mode"].as_str(), production["active"].as_bool()),
        (Some("production"), Some(true))
    );
    for press in ["line-1/press-1", "line-2/press-6"] {
        let twin = node.ok(&["get", &format!("acme/plant-a/{press}"), "--json"]);
        let twin: serde_json::Value = serde_json::from_str(twin.stdout.trim()).unwrap();
        let models = twin["models"].as_array().unwrap();
        let degradation = models.iter().find(|m| m["name"] == "degradation").unwrap();
        assert_eq!(degradation["version"], "1.1.0", "{twin}");
    }

    // What came of it, as the README shows: an annotation, exported as a label.
    let annotated = node.model(&[
        "annotate",
        "acme/plant-a/line-1/press-3",
        "--recommendation",
        "set_speed",
        "--param",
        "rpm=1400",
        "--outcome",
        "confirmed",
        "--note",
        "cooled within the shift",
    ]);
    assert!(
        annotated
            .stdout
            .contains("confirmed on recommendation set_speed rpm=1400"),
        "{}",
        annotated.stdout
    );
    let labels = node.model(&["annotations", "--json"]);
    let label: serde_json::Value = serde_json::from_str(labels.stdout.trim()).unwrap();
    assert_eq!(label["recommendation"]["params"]["rpm"], 1400.0, "{label}");
    let concerned = label["models"].as_array().unwrap();
    assert!(
        concerned
            .iter()
            .any(|m| m["name"] == "degradation" && m["version"] == "1.1.0"),
        "{label}"
    );
}
