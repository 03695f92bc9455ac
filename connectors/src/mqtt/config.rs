//! MQTT connector configuration: the `[[mqtt]]` tables of a node config.

use std::time::Duration;

use serde::Deserialize;

use super::MqttError;
use super::sparkplug::SparkplugConfig;
use super::tls::MqttTls;
use crate::delivery::Resend;
use crate::reach::{AssetReach, Reach};

/// One broker connection.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// The connector's name, for logs and as its data source name (`mqtt:<name>`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The broker: `mqtt://host:port` or `tcp://host:port` (port 1883 when left out),
    /// or over TLS `mqtts://host:port` or `ssl://host:port` (port 8883 when left out).
    pub url: String,
    /// TLS settings for an `mqtts://` broker: CA certificates, a client certificate
    /// and key, the name to verify (the `[mqtt.tls]` table). Without it an `mqtts://`
    /// broker is verified against the system's CAs, with no client certificate.
    #[serde(default)]
    pub tls: Option<MqttTls>,
    /// The MQTT client id; the broker keeps this client's persistent session under
    /// it. Defaults to `doppel-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, if the broker asks for one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password, if the broker asks for one.
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive interval in seconds.
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u64,
    /// Largest payload the connector reads; bigger messages are dropped as oversized.
    #[serde(default = "default_max_payload")]
    pub max_payload: usize,
    /// Largest MQTT packet the connector sends. Incoming packets are read whatever
    /// their size (up to MQTT's own limit), so a message above `max_payload` is
    /// dropped, counted and acknowledged rather than breaking the connection.
    #[serde(default = "default_max_packet")]
    pub max_packet: usize,
    /// First delay before reconnecting, in milliseconds; it doubles up to
    /// `reconnect_max_ms` while the broker stays unreachable.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest delay between reconnection attempts, in milliseconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// The Unified Namespace JSON layout (on unless `enabled = false`).
    #[serde(default)]
    pub uns: UnsConfig,
    /// The Sparkplug B layout (off unless the table is present).
    #[serde(default)]
    pub sparkplug: Option<SparkplugConfig>,
    /// What to do, when the actuation connection is back, with desired values that did
    /// not reach the broker: `"latest"` (default) publishes each value's latest desired
    /// value again unless its command's deadline passed, safety actions first;
    /// `"never"` fails them at once.
    #[serde(default)]
    pub resend: Resend,
}

impl MqttConfig {
    /// What this connection reaches: with the Unified Namespace layout, every hosted
    /// twin (it subscribes to all their topics), and every desired value when it
    /// publishes commands; with Sparkplug, the mapped twins and every desired value
    /// (each goes out as a DCMD or NCMD metric).
    pub fn reach(&self) -> Reach {
        let every_desired = AssetReach {
            every_desired: true,
            ..AssetReach::default()
        };
        let mut reach = Reach::default();
        if self.uns.enabled {
            reach.every_twin = Some(if self.uns.publish_commands {
                every_desired.clone()
            } else {
                AssetReach::default()
            });
        }
        if let Some(sparkplug) = &self.sparkplug {
            for mapping in &sparkplug.map {
                reach
                    .assets
                    .insert(mapping.asset.clone(), every_desired.clone());
            }
        }
        reach
    }
}

/// The Unified Namespace JSON layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnsConfig {
    /// Whether the connector reads and writes this layout.
    pub enabled: bool,
    /// Prefix before the asset path in every topic, e.g. `uns/` (empty by default).
    pub prefix: String,
    /// The topic level after the asset path that carries telemetry.
    pub telemetry: String,
    /// The topic level after the asset path that carries commands to the machine;
    /// verdicts go to `<asset>/<commands>/result`.
    pub commands: String,
    /// Whether actuations and verdicts are published.
    pub publish_commands: bool,
    /// Payload field names.
    pub fields: FieldNames,
    /// The asset path prefixes whose telemetry the connector subscribes to; empty:
    /// every asset path, so a topic for an asset no twin has is received and counted.
    /// A cluster edge node sets the plants or lines it owns, so what other edges host
    /// on a shared broker never reaches it.
    #[serde(skip)]
    pub scope: Vec<doppel_runtime::AssetPath>,
}

/// Payload field names of the JSON layout.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FieldNames {
    /// The value (`v`).
    pub value: String,
    /// The source timestamp (`ts`): RFC 3339 text or milliseconds since the epoch.
    pub timestamp: String,
    /// The quality (`q`): `good`, `uncertain` or `bad`.
    pub quality: String,
    /// The source's sequence number (`seq`).
    pub seq: String,
    /// The source's epoch (`epoch`): a number or text the publisher changes when it
    /// restarts its numbering.
    pub epoch: String,
    /// In the batch form, the object of channel values (`values`).
    pub values: String,
}

impl Default for UnsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            prefix: String::new(),
            telemetry: "telemetry".into(),
            commands: "cmd".into(),
            publish_commands: true,
            fields: FieldNames::default(),
            scope: Vec::new(),
        }
    }
}

impl Default for FieldNames {
    fn default() -> Self {
        Self {
            value: "v".into(),
            timestamp: "ts".into(),
            quality: "q".into(),
            seq: "seq".into(),
            epoch: "epoch".into(),
            values: "values".into(),
        }
    }
}

fn default_name() -> String {
    "mqtt".into()
}

fn default_keep_alive() -> u64 {
    30
}

fn default_max_payload() -> usize {
    256 * 1024
}

fn default_max_packet() -> usize {
    16 * 1024 * 1024
}

fn default_reconnect_min() -> u64 {
    100
}

fn default_reconnect_max() -> u64 {
    10_000
}

impl MqttConfig {
    /// A connection to `url` with every other setting at its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            name: default_name(),
            url: url.into(),
            tls: None,
            client_id: None,
            username: None,
            password: None,
            keep_alive_secs: default_keep_alive(),
            max_payload: default_max_payload(),
            max_packet: default_max_packet(),
            reconnect_min_ms: default_reconnect_min(),
            reconnect_max_ms: default_reconnect_max(),
            uns: UnsConfig::default(),
            sparkplug: None,
            resend: Resend::Latest,
        }
    }

    /// Whether the URL asks for TLS (`mqtts://`, `ssl://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("mqtts://") || self.url.starts_with("ssl://")
    }

    /// The broker's host and port.
    pub fn broker(&self) -> Result<(String, u16), MqttError> {
        let bad = |why: &str| {
            MqttError::Config(format!("mqtt `{}`: url `{}`: {why}", self.name, self.url))
        };
        let (rest, default_port) = [
            ("mqtt://", 1883),
            ("tcp://", 1883),
            ("mqtts://", 8883),
            ("ssl://", 8883),
        ]
        .into_iter()
        .find_map(|(scheme, port)| Some((self.url.strip_prefix(scheme)?, port)))
        .ok_or_else(|| bad("expected mqtt://host:port or mqtts://host:port"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
                let port = port.parse::<u16>().map_err(|_| bad("bad port"))?;
                (host, port)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains('/') {
            return Err(bad("bad host"));
        }
        Ok((host.to_string(), port))
    }

    /// The reconnect backoff bounds.
    pub fn backoff(&self) -> (Duration, Duration) {
        let min = Duration::from_millis(self.reconnect_min_ms.max(1));
        (min, Duration::from_millis(self.reconnect_max_ms).max(min))
    }

    /// How to reach the broker: TLS for an `mqtts://` URL, with the certificates and
    /// key read now (an unreadable file is an error naming it); `None` for plain TCP.
    pub fn transport(&self) -> Result<Option<rumqttc::Transport>, MqttError> {
        if !self.is_tls() {
            return Ok(None);
        }
        self.tls
            .clone()
            .unwrap_or_default()
            .transport()
            .map(Some)
            .map_err(|why| MqttError::Config(format!("mqtt `{}`: {why}", self.name)))
    }

    /// Checks settings that serde cannot.
    pub fn validate(&self) -> Result<(), MqttError> {
        self.broker()?;
        let bad = |why: String| Err(MqttError::Config(format!("mqtt `{}`: {why}", self.name)));
        if self.tls.is_some() && !self.is_tls() {
            return bad(format!(
                "a [tls] table needs an mqtts:// url, not `{}`",
                self.url
            ));
        }
        if self.name.is_empty() {
            return bad("name is empty".into());
        }
        if self.max_payload == 0 || self.max_packet == 0 {
            return bad(format!(
                "max_payload ({}) and max_packet ({}) must be positive",
                self.max_payload, self.max_packet
            ));
        }
        let uns = &self.uns;
        for (what, level) in [("telemetry", &uns.telemetry), ("commands", &uns.commands)] {
            if level.is_empty() || level.contains(['/', '+', '#']) {
                return bad(format!("uns.{what} `{level}` must be one topic level"));
            }
        }
        if uns.prefix.contains(['+', '#']) {
            return bad(format!(
                "uns.prefix `{}` must not contain wildcards",
                uns.prefix
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_broker_urls() {
        let host = |url: &str| MqttConfig::new(url).broker();
        assert_eq!(
            host("mqtt://127.0.0.1:1884").unwrap(),
            ("127.0.0.1".into(), 1884)
        );
        assert_eq!(
            host("tcp://broker.local").unwrap(),
            ("broker.local".into(), 1883)
        );
        assert_eq!(host("mqtt://[::1]:1885/").unwrap(), ("::1".into(), 1885));
        assert_eq!(host("mqtts://broker").unwrap(), ("broker".into(), 8883));
        assert_eq!(host("ssl://broker:8884").unwrap(), ("broker".into(), 8884));
        assert!(host("http://broker").is_err());
        assert!(host("mqtt://broker:99999").is_err());
        assert!(host("mqtt://").is_err());
    }

    #[test]
    fn reads_toml_with_defaults_and_refuses_unknown_fields() {
        let config: MqttConfig = toml::from_str(
            r#"
            url = "mqtt://127.0.0.1:1883"
            [uns]
            prefix = "uns/"
            fields = { value = "value" }
            "#,
        )
        .unwrap();
        assert_eq!(config.name, "mqtt");
        assert_eq!(config.uns.prefix, "uns/");
        assert_eq!(config.uns.fields.value, "value");
        assert_eq!(config.uns.fields.timestamp, "ts");
        assert!(config.validate().is_ok());
        assert!(toml::from_str::<MqttConfig>("url = \"mqtt://h\"\nqos = 2").is_err());
        let mut wild = config.clone();
        wild.uns.telemetry = "tele/metry".into();
        assert!(wild.validate().is_err());
    }
}
