//! MQTT over TLS to Mosquitto with a listener that requires client certificates:
//! telemetry in and commands out over mutual TLS, and a connector with the wrong CA or
//! without a client certificate kept out with an error that says why.

use std::path::Path;
use std::time::Duration;

use doppel::connectors::mqtt::{MqttConfig, MqttConnector, MqttTls};
use doppel_testkit::mosquitto::TlsListener;
use doppel_testkit::tls::CertificateAuthority;

use crate::brokers::Mosquitto;
use crate::mqtt::round_trip_with;
use crate::support;

/// The name in the broker's certificate: the connector dials 127.0.0.1 and checks the
/// certificate against this name instead.
const BROKER_NAME: &str = "broker.plant.test";

/// How long a connector that must not connect is given to fail.
const REFUSED_WITHIN: Duration = Duration::from_secs(3);

struct Pki {
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
}

impl Pki {
    fn new(name: &str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            ca: CertificateAuthority::new(name),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A TLS listener for Mosquitto: a certificate for [`BROKER_NAME`] only, and
    /// client certificates required, signed by this CA.
    fn listener(&self) -> TlsListener {
        let broker = self.ca.issue("broker", &[BROKER_NAME]);
        TlsListener {
            ca_pem: self.ca.certificate_pem().to_string(),
            cert_pem: broker.certificate_pem,
            key_pem: broker.key_pem,
        }
    }

    /// Connector TLS settings trusting this CA, with a client certificate if asked.
    fn settings(&self, client_certificate: bool) -> MqttTls {
        let (cert, key) = if client_certificate {
            let (cert, key) = self
                .ca
                .issue("doppel-edge", &["doppel-edge"])
                .write(self.path(), "client");
            (Some(cert), Some(key))
        } else {
            (None, None)
        };
        MqttTls {
            ca: Some(self.ca.write_certificate(&self.path().join("ca.pem"))),
            cert,
            key,
            server_name: Some(BROKER_NAME.to_string()),
        }
    }
}

fn config(url: String, tls: MqttTls) -> MqttConfig {
    let mut config = MqttConfig::new(url);
    config.tls = Some(tls);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_and_commands_over_mutual_tls() {
    let pki = Pki::new("plant test CA");
    let Some(broker) =
        Mosquitto::start_tls("telemetry_and_commands_over_mutual_tls", &pki.listener())
    else {
        return;
    };
    let url = broker.tls_url().unwrap();
    assert!(url.starts_with("mqtts://127.0.0.1:"), "{url}");
    // The connector over TLS with its client certificate; the test's machine on the
    // broker's plain listener: both see the same topics.
    round_trip_with(config(url, pki.settings(true)), &broker.url()).await;
}

/// Starts a connector that must be kept out, and returns why it was.
async fn refused(config: MqttConfig) -> String {
    let dir = tempfile::tempdir().unwrap();
    let runtime = support::start(dir.path()).await;
    let connector = MqttConnector::start(config, runtime.twins().clone())
        .await
        .unwrap();
    assert!(
        !connector.wait_connected(REFUSED_WITHIN).await,
        "connected though it must not"
    );
    let error = connector.last_error().expect("the failure is kept");
    connector.stop().await;
    runtime.shutdown().await;
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_no_client_certificate_is_refused_with_a_clear_error() {
    let pki = Pki::new("plant test CA");
    let Some(broker) = Mosquitto::start_tls(
        "a_wrong_ca_or_no_client_certificate_is_refused_with_a_clear_error",
        &pki.listener(),
    ) else {
        return;
    };
    let url = broker.tls_url().unwrap();

    let stranger = Pki::new("a stranger's CA");
    let mut wrong_ca = pki.settings(true);
    wrong_ca.ca = Some(
        stranger
            .ca
            .write_certificate(&stranger.path().join("ca.pem")),
    );
    let error = refused(config(url.clone(), wrong_ca)).await;
    assert!(
        error.contains("certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );

    let error = refused(config(url.clone(), pki.settings(false))).await;
    assert!(error.to_lowercase().contains("alert"), "{error}");

    let mut wrong_name = pki.settings(true);
    wrong_name.server_name = Some("another.plant.test".into());
    let error = refused(config(url, wrong_name)).await;
    assert!(error.contains("not valid for name"), "{error}");
}

#[test]
fn unreadable_tls_files_stop_the_connector_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut tls = MqttTls {
        ca: Some(dir.path().join("no-such-ca.pem")),
        ..MqttTls::default()
    };
    let config = config("mqtts://127.0.0.1:8883".into(), tls.clone());
    let error = config.transport().err().unwrap().to_string();
    assert!(error.contains("no-such-ca.pem"), "{error}");
    tls.ca = None;
    let plain = config_plain_with_tls(tls);
    let error = plain.validate().err().unwrap().to_string();
    assert!(error.contains("mqtts://"), "{error}");
}

fn config_plain_with_tls(tls: MqttTls) -> MqttConfig {
    config("mqtt://127.0.0.1:1883".into(), tls)
}
