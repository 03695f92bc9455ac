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

/// The cluster example as shipped: its certificates made with the command its configs
/// name, its three nodes started on this machine from the configs unchanged. They form
/// a cluster over mutual TLS and forward a command from the cloud to an edge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_example_runs_as_shipped_over_mutual_tls() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use doppel_api::convert::named_value;
    use doppel_proto::v1 as pb;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};

    // The example listens on fixed loopback ports.
    let _ports = crate::support::DEFAULT_PORTS.lock().await;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cluster");
    let dir = tempfile::tempdir().unwrap();
    for file in [
        "types.toml",
        "plant.toml",
        "edge-a.toml",
        "edge-b.toml",
        "cloud.toml",
    ] {
        std::fs::copy(example.join(file), dir.path().join(file)).unwrap();
    }
    // The command the configs' comments give, run where the configs are.
    let documented = std::fs::read_to_string(example.join("edge-a.toml"))
        .unwrap()
        .lines()
        .find_map(|line| {
            line.trim_start_matches('#')
                .trim()
                .strip_prefix("doppel cluster certs ")
        })
        .expect("edge-a.toml says how to make the certificates")
        .to_string();
    let made = Command::new(env!("CARGO_BIN_EXE_doppel"))
        .args(["cluster", "certs"])
        .args(documented.split_whitespace())
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let certs = dir.path().join("certs");
    let machines = ["edge-a", "edge-b", "cloud"];
    let mut children = Vec::new();
    let outputs: Vec<Arc<parking_lot::Mutex<Vec<String>>>> =
        machines.iter().map(|_| Arc::default()).collect();
    for (index, name) in machines.iter().enumerate() {
        let path = dir.path().join(format!("{name}.toml"));
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_doppel"))
            .args(["node", "--config"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = outputs[index].clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    output.lock().push(line);
                }
            });
        }
        children.push(doppel_testkit::process::KillOnDrop(child));
    }
    let everything = || {
        outputs
            .iter()
            .map(|o| o.lock().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    };
    let start = Instant::now();
    while !outputs
        .iter()
        .all(|o| o.lock().iter().any(|l| l.starts_with("members: 3 live")))
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            everything()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        outputs[2]
            .lock()
            .iter()
            .any(|l| l.contains("planners here: [")),
        "{}",
        everything()
    );

    // The cloud's API over TLS, with the ops token: forwarded to edge-b.
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(
            std::fs::read(certs.join("ca.pem")).unwrap(),
        ))
        .domain_name("127.0.0.1");
    let channel = Channel::from_shared("https://127.0.0.1:7122".to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token: tonic::metadata::MetadataValue<_> = "Bearer replace-with-a-long-random-secret-3"
        .parse()
        .unwrap();
    let mut client = pb::twin_service_client::TwinServiceClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
            Ok(request)
        },
    );
    let response = client
        .send_command(pb::SendCommandRequest {
            asset_path: "acme/plant-a/line-2/press-3".into(),
            command: "set_speed".into(),
            params: vec![named_value("rpm", doppel::Value::Float(1500.0))],
            ..Default::default()
        })
        .await
        .unwrap_or_else(|status| panic!("{status:?}\n{}", everything()))
        .into_inner();
    assert!(
        matches!(
            response.verdict.and_then(|v| v.outcome),
            Some(pb::verdict::Outcome::Accepted(_))
        ),
        "{}",
        everything()
    );
    drop(children);
}
