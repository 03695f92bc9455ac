//! Configuration of one OPC UA connector: the endpoint, its security, and the node
//! mapping of each asset.
//!
//! ```toml
//! [[opcua]]
//! name = "press-line"
//! endpoint = "opc.tcp://plc-1.plant-a:4840/"
//! security_policy = "Basic256Sha256"
//! security_mode = "SignAndEncrypt"
//! reconnect = { initial_ms = 500, max_ms = 30000 }
//!
//! [[opcua.asset]]
//! path = "acme/plant-a/line-1/press-1"
//! channels = [
//!     { channel = "temperature", node = "ns=2;s=Press1.Temperature", sampling_ms = 100, deadband = 0.5 },
//! ]
//! writes = [ { desired = "speed", node = "ns=2;s=Press1.Speed" } ]
//! methods = [
//!     { command = "stop", object = "ns=2;s=Press1", method = "ns=2;s=Press1.Stop" },
//!     { command = "set_speed", object = "ns=2;s=Press1", method = "ns=2;s=Press1.Ramp", args = [{ param = "rpm", type = "Float" }] },
//! ]
//! ```

use std::fmt;
use std::path::PathBuf;

use doppel_runtime::AssetPath;
use serde::Deserialize;

use super::error::OpcUaError;
use crate::delivery::Resend;
use crate::reach::Reach;

/// One OPC UA connector: one server endpoint and the assets whose nodes it maps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaConfig {
    /// Connector name. Names the data source (`opcua:<name>`), log lines and the default
    /// PKI directory; keep it stable, the source id is durable.
    pub name: String,
    /// The server's endpoint URL, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// Message security policy. Default `Basic256Sha256`.
    #[serde(default)]
    pub security_policy: SecurityPolicy,
    /// Message security mode. Default `SignAndEncrypt`.
    #[serde(default)]
    pub security_mode: SecurityMode,
    /// Connect to an endpoint without message security (policy or mode `None`). Default
    /// false: such an endpoint is refused at start.
    #[serde(default)]
    pub allow_insecure: bool,
    /// Directory of the connector's own certificate (`own/cert.der`,
    /// `private/private.pem`, created on first start) and of the `trusted/` and
    /// `rejected/` server certificates. A relative path is taken under the node's data
    /// directory. Default `<data dir>/opcua/<name>/pki`.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
    /// Trust whatever certificate the server presents (it is copied to `trusted/`).
    /// Default false: the server's certificate must already be in `trusted/`; an unknown
    /// one is stored in `rejected/` for an administrator to move.
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// User name for a user-name identity; anonymous when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user`.
    #[serde(default)]
    pub password: Option<Password>,
    /// Backoff between connection attempts.
    #[serde(default)]
    pub reconnect: ReconnectConfig,
    /// Subscription publishing interval in milliseconds. Default 100.
    #[serde(default = "default_publishing_ms")]
    pub publishing_ms: u64,
    /// Timeout of every request (connect, read, write, call) in milliseconds. Default 10000.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Interval of keep-alive reads in milliseconds; three failed in a row end the
    /// session and start a reconnect. Default 5000.
    #[serde(default = "default_keep_alive_ms")]
    pub keep_alive_ms: u64,
    /// What to do, when a session is established again, with desired values that did
    /// not reach the server: `"latest"` (default) writes each value's latest desired
    /// value again unless its command's deadline passed, safety actions first;
    /// `"never"` fails them at once.
    #[serde(default)]
    pub resend: Resend,
    /// Node mapping, per asset.
    #[serde(default, rename = "asset")]
    pub assets: Vec<AssetMapping>,
}

/// Backoff between connection attempts: it starts at `initial_ms`, doubles after each
/// failed attempt up to `max_ms`, and starts over once a session is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconnectConfig {
    /// First delay in milliseconds. Default 500.
    #[serde(default = "default_reconnect_initial_ms")]
    pub initial_ms: u64,
    /// Longest delay in milliseconds. Default 30000.
    #[serde(default = "default_reconnect_max_ms")]
    pub max_ms: u64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_ms: default_reconnect_initial_ms(),
            max_ms: default_reconnect_max_ms(),
        }
    }
}

/// How the nodes of one asset map to its twin.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetMapping {
    /// The twin's asset path.
    pub path: AssetPath,
    /// Variables monitored into telemetry channels.
    #[serde(default)]
    pub channels: Vec<ChannelMapping>,
    /// Desired values written to variables when a command or safety action changes them.
    #[serde(default)]
    pub writes: Vec<WriteMapping>,
    /// Commands that call a method.
    #[serde(default)]
    pub methods: Vec<MethodMapping>,
}

/// A variable monitored into a telemetry channel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMapping {
    /// The channel of the twin's type.
    pub channel: String,
    /// The variable's node id (`ns=2;s=Press1.Temperature`).
    pub node: String,
    /// Sampling interval asked of the server, in milliseconds. Default 100.
    #[serde(default = "default_sampling_ms")]
    pub sampling_ms: u64,
    /// Absolute deadband: the server reports a change only when the value moved by more
    /// than this. Default 0 (every change).
    #[serde(default)]
    pub deadband: f64,
}

/// A desired value written to a variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteMapping {
    /// The desired value of the twin's type.
    pub desired: String,
    /// The variable's node id. The value is converted to the variable's DataType.
    pub node: String,
}

/// A command that calls a method.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodMapping {
    /// The command of the twin's type.
    pub command: String,
    /// The node id of the object that owns the method.
    pub object: String,
    /// The method's node id.
    pub method: String,
    /// The method's input arguments, in order. Each names a command parameter and
    /// carries the governed value of the desired value that parameter sets (after
    /// every governor's clamp), never the parameter as requested.
    #[serde(default)]
    pub args: Vec<MethodArg>,
}

/// One input argument of a method call.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum MethodArg {
    /// A command parameter (its governed value), sent as Double (float), Int64 (int)
    /// or Boolean (bool).
    Param(String),
    /// A command parameter (its governed value) converted to an explicit OPC UA type.
    Typed {
        /// The command parameter.
        param: String,
        /// The argument's OPC UA type.
        #[serde(rename = "type")]
        data_type: ScalarType,
    },
}

impl MethodArg {
    /// The command parameter the argument takes its value from.
    pub fn param(&self) -> &str {
        match self {
            MethodArg::Param(param) | MethodArg::Typed { param, .. } => param,
        }
    }

    /// The explicit OPC UA type, if one is configured.
    pub fn data_type(&self) -> Option<ScalarType> {
        match self {
            MethodArg::Param(_) => None,
            MethodArg::Typed { data_type, .. } => Some(*data_type),
        }
    }
}

/// An OPC UA message security policy. The deprecated `Basic128Rsa15` and `Basic256`
/// are not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SecurityPolicy {
    /// No security: neither signed nor encrypted. Needs `allow_insecure`.
    None,
    /// RSA-OAEP / AES-256-CBC / SHA-256.
    #[default]
    Basic256Sha256,
    /// RSA-OAEP / AES-128-CBC / SHA-256.
    Aes128Sha256RsaOaep,
    /// RSA-OAEP-SHA256 / AES-256-CBC / RSA-PSS-SHA256.
    Aes256Sha256RsaPss,
}

impl SecurityPolicy {
    /// The policy as async-opcua knows it.
    pub fn to_opcua(self) -> opcua::crypto::SecurityPolicy {
        match self {
            SecurityPolicy::None => opcua::crypto::SecurityPolicy::None,
            SecurityPolicy::Basic256Sha256 => opcua::crypto::SecurityPolicy::Basic256Sha256,
            SecurityPolicy::Aes128Sha256RsaOaep => {
                opcua::crypto::SecurityPolicy::Aes128Sha256RsaOaep
            }
            SecurityPolicy::Aes256Sha256RsaPss => opcua::crypto::SecurityPolicy::Aes256Sha256RsaPss,
        }
    }
}

impl fmt::Display for SecurityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An OPC UA message security mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum SecurityMode {
    /// Messages are neither signed nor encrypted. Needs `allow_insecure`.
    None,
    /// Messages are signed.
    Sign,
    /// Messages are signed and encrypted.
    #[default]
    SignAndEncrypt,
}

impl SecurityMode {
    /// The mode as async-opcua knows it.
    pub fn to_opcua(self) -> opcua::types::MessageSecurityMode {
        match self {
            SecurityMode::None => opcua::types::MessageSecurityMode::None,
            SecurityMode::Sign => opcua::types::MessageSecurityMode::Sign,
            SecurityMode::SignAndEncrypt => opcua::types::MessageSecurityMode::SignAndEncrypt,
        }
    }
}

impl fmt::Display for SecurityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An OPC UA built-in scalar type the connector converts desired values and command
/// parameters to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum ScalarType {
    /// Boolean.
    Boolean,
    /// Signed 8-bit integer.
    SByte,
    /// Unsigned 8-bit integer.
    Byte,
    /// Signed 16-bit integer.
    Int16,
    /// Unsigned 16-bit integer.
    UInt16,
    /// Signed 32-bit integer.
    Int32,
    /// Unsigned 32-bit integer.
    UInt32,
    /// Signed 64-bit integer.
    Int64,
    /// Unsigned 64-bit integer.
    UInt64,
    /// 32-bit float.
    Float,
    /// 64-bit float.
    Double,
}

impl fmt::Display for ScalarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A password that never shows in logs or debug output.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(****)")
    }
}

/// A configuration document: `opcua` is one table (`[opcua]`) or an array of them
/// (`[[opcua]]`); other sections belong to other parts of the node.
#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    opcua: Option<OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(Box<OpcUaConfig>),
    Many(Vec<OpcUaConfig>),
}

impl OpcUaConfig {
    /// What this connector reaches: the mapped twins, their written desired values and
    /// the commands that call a method.
    pub fn reach(&self) -> Reach {
        let mut reach = Reach::default();
        for asset in &self.assets {
            let entry = reach.assets.entry(asset.path.clone()).or_default();
            entry
                .desired
                .extend(asset.writes.iter().map(|w| w.desired.clone()));
            entry
                .commands
                .extend(asset.methods.iter().map(|m| m.command.clone()));
        }
        reach
    }

    /// Reads every OPC UA connector of a TOML document: its `[opcua]` table or its
    /// `[[opcua]]` array. A document without either has none.
    pub fn from_toml(source: &str) -> Result<Vec<OpcUaConfig>, OpcUaError> {
        // The untagged wrapper hides the field that failed; a second, direct parse
        // reports it.
        let document: Document = toml::from_str(source).map_err(|error| {
            let detail = toml::from_str::<toml::Table>(source)
                .ok()
                .and_then(|table| table.get("opcua").cloned())
                .and_then(|value| match value {
                    toml::Value::Array(items) => items
                        .into_iter()
                        .find_map(|item| item.try_into::<OpcUaConfig>().err()),
                    other => other.try_into::<OpcUaConfig>().err(),
                });
            OpcUaError::Config(
                detail
                    .map(|e| e.message().trim().to_string())
                    .unwrap_or_else(|| error.message().trim().to_string()),
            )
        })?;
        Ok(match document.opcua {
            None => Vec::new(),
            Some(OneOrMany::One(config)) => vec![*config],
            Some(OneOrMany::Many(configs)) => configs,
        })
    }

    /// Checks what can be checked without the twins: the endpoint URL, security
    /// (refusing an insecure endpoint unless allowed), identity and numbers.
    pub fn validate(&self) -> Result<(), OpcUaError> {
        let invalid = |problem: String| OpcUaError::Invalid {
            connector: self.name.clone(),
            problem,
        };
        if self.name.trim().is_empty() || self.name.contains(['/', '\\']) {
            return Err(invalid(format!(
                "name `{}` must be non-empty and contain no path separator",
                self.name
            )));
        }
        if !self.endpoint.starts_with("opc.tcp://") || self.endpoint.len() <= "opc.tcp://".len() {
            return Err(OpcUaError::InvalidEndpoint {
                connector: self.name.clone(),
                endpoint: self.endpoint.clone(),
            });
        }
        let policy_none = self.security_policy == SecurityPolicy::None;
        let mode_none = self.security_mode == SecurityMode::None;
        if policy_none != mode_none {
            return Err(OpcUaError::InconsistentSecurity {
                connector: self.name.clone(),
                policy: self.security_policy,
                mode: self.security_mode,
            });
        }
        if policy_none && !self.allow_insecure {
            return Err(OpcUaError::InsecureEndpoint {
                connector: self.name.clone(),
                endpoint: self.endpoint.clone(),
                policy: self.security_policy,
                mode: self.security_mode,
            });
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(invalid("user and password go together".to_string()));
        }
        if self.reconnect.initial_ms == 0 || self.reconnect.max_ms < self.reconnect.initial_ms {
            return Err(invalid(format!(
                "reconnect needs 0 < initial_ms <= max_ms, got {} and {}",
                self.reconnect.initial_ms, self.reconnect.max_ms
            )));
        }
        for (field, value) in [
            ("publishing_ms", self.publishing_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("keep_alive_ms", self.keep_alive_ms),
        ] {
            if value == 0 {
                return Err(invalid(format!("{field} must be positive")));
            }
        }
        for asset in &self.assets {
            for channel in &asset.channels {
                if !(channel.deadband.is_finite() && channel.deadband >= 0.0) {
                    return Err(invalid(format!(
                        "asset `{}` channel `{}`: deadband must be a non-negative number",
                        asset.path, channel.channel
                    )));
                }
            }
        }
        Ok(())
    }

    /// True when messages are neither signed nor encrypted.
    pub fn is_insecure(&self) -> bool {
        self.security_policy == SecurityPolicy::None || self.security_mode == SecurityMode::None
    }
}

fn default_publishing_ms() -> u64 {
    100
}

fn default_request_timeout_ms() -> u64 {
    10_000
}

fn default_keep_alive_ms() -> u64 {
    5_000
}

fn default_reconnect_initial_ms() -> u64 {
    500
}

fn default_reconnect_max_ms() -> u64 {
    30_000
}

fn default_sampling_ms() -> u64 {
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
        [runtime]
        data_dir = "/var/lib/doppel"

        [[opcua]]
        name = "press-line"
        endpoint = "opc.tcp://127.0.0.1:4840/"
        security_policy = "Aes256Sha256RsaPss"
        security_mode = "Sign"
        pki_dir = "pki/press-line"
        trust_server_certificate = true
        user = "doppel"
        password = "secret"
        reconnect = { initial_ms = 100, max_ms = 2000 }
        publishing_ms = 50

        [[opcua.asset]]
        path = "acme/plant-a/line-1/press-1"
        channels = [
            { channel = "temperature", node = "ns=2;s=Press1.Temperature", sampling_ms = 100, deadband = 0.5 },
            { channel = "vibration", node = "ns=2;i=1001" },
        ]
        writes = [ { desired = "speed", node = "ns=2;s=Press1.Speed" } ]
        methods = [
            { command = "stop", object = "ns=2;s=Press1", method = "ns=2;s=Press1.Stop" },
            { command = "set_speed", object = "ns=2;s=Press1", method = "ns=2;s=Press1.Ramp", args = ["rpm", { param = "ramp", type = "Int32" }] },
        ]

        [[opcua]]
        name = "pumps"
        endpoint = "opc.tcp://127.0.0.1:4841/"
    "#;

    #[test]
    fn parses_every_field_and_defaults() {
        let configs = OpcUaConfig::from_toml(FULL).unwrap();
        assert_eq!(configs.len(), 2);
        let press = &configs[0];
        assert_eq!(press.name, "press-line");
        assert_eq!(press.security_policy, SecurityPolicy::Aes256Sha256RsaPss);
        assert_eq!(press.security_mode, SecurityMode::Sign);
        assert!(!press.allow_insecure);
        assert!(press.trust_server_certificate);
        assert_eq!(press.pki_dir, Some(PathBuf::from("pki/press-line")));
        assert_eq!(press.user.as_deref(), Some("doppel"));
        assert_eq!(
            press.password.as_ref().map(Password::expose),
            Some("secret")
        );
        assert!(!format!("{press:?}").contains("secret"));
        assert_eq!(
            press.reconnect,
            ReconnectConfig {
                initial_ms: 100,
                max_ms: 2000
            }
        );
        assert_eq!(press.publishing_ms, 50);
        assert_eq!(press.request_timeout_ms, 10_000);
        let asset = &press.assets[0];
        assert_eq!(asset.path.as_str(), "acme/plant-a/line-1/press-1");
        assert_eq!(asset.channels[0].deadband, 0.5);
        assert_eq!(asset.channels[1].sampling_ms, 100);
        assert_eq!(asset.channels[1].deadband, 0.0);
        assert_eq!(asset.writes[0].desired, "speed");
        assert!(asset.methods[0].args.is_empty());
        assert_eq!(
            asset.methods[1].args,
            vec![
                MethodArg::Param("rpm".to_string()),
                MethodArg::Typed {
                    param: "ramp".to_string(),
                    data_type: ScalarType::Int32
                }
            ]
        );
        press.validate().unwrap();

        let pumps = &configs[1];
        assert_eq!(pumps.security_policy, SecurityPolicy::Basic256Sha256);
        assert_eq!(pumps.security_mode, SecurityMode::SignAndEncrypt);
        assert_eq!(pumps.reconnect, ReconnectConfig::default());
        assert!(pumps.assets.is_empty());
        pumps.validate().unwrap();
    }

    #[test]
    fn a_single_table_and_no_table_both_read() {
        let one = OpcUaConfig::from_toml(
            "[opcua]\nname = \"a\"\nendpoint = \"opc.tcp://127.0.0.1:4840\"\n",
        )
        .unwrap();
        assert_eq!(one.len(), 1);
        assert!(
            OpcUaConfig::from_toml("[other]\nx = 1\n")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let error = OpcUaConfig::from_toml(
            "[[opcua]]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\nsecurity = \"None\"\n",
        )
        .unwrap_err();
        assert!(
            matches!(&error, OpcUaError::Config(message) if message.contains("security")),
            "{error}"
        );
        let error = OpcUaConfig::from_toml(
            "[[opcua]]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\n[[opcua.asset]]\npath = \"a/b\"\nchannels = [{ channel = \"t\", node = \"ns=2;i=1\", dead_band = 1.0 }]\n",
        )
        .unwrap_err();
        assert!(
            matches!(&error, OpcUaError::Config(message) if message.contains("dead_band")),
            "{error}"
        );
        assert!(
            OpcUaConfig::from_toml(
                "[[opcua]]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\n[[opcua.asset]]\npath = \"a/b\"\nmethods = [{ command = \"c\", object = \"ns=2;i=1\", method = \"ns=2;i=2\", args = [{ param = \"p\", type = \"Double\", unit = \"rpm\" }] }]\n",
            )
            .is_err()
        );
    }

    #[test]
    fn insecure_endpoints_are_refused_unless_allowed() {
        let parse = |extra: &str| {
            OpcUaConfig::from_toml(&format!(
                "[opcua]\nname = \"a\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n{extra}"
            ))
            .unwrap()
            .remove(0)
        };
        let insecure = parse("security_policy = \"None\"\nsecurity_mode = \"None\"\n");
        assert!(insecure.is_insecure());
        assert!(matches!(
            insecure.validate(),
            Err(OpcUaError::InsecureEndpoint {
                policy: SecurityPolicy::None,
                mode: SecurityMode::None,
                ..
            })
        ));
        let allowed =
            parse("security_policy = \"None\"\nsecurity_mode = \"None\"\nallow_insecure = true\n");
        allowed.validate().unwrap();
        let mixed = parse("security_policy = \"None\"\nsecurity_mode = \"Sign\"\n");
        assert!(matches!(
            mixed.validate(),
            Err(OpcUaError::InconsistentSecurity { .. })
        ));
        let mixed = parse("security_mode = \"None\"\nallow_insecure = true\n");
        assert!(matches!(
            mixed.validate(),
            Err(OpcUaError::InconsistentSecurity { .. })
        ));
    }

    #[test]
    fn bad_values_are_refused() {
        let parse = |text: &str| OpcUaConfig::from_toml(text).unwrap().remove(0);
        let http = parse("[opcua]\nname = \"a\"\nendpoint = \"http://h:1\"\n");
        assert!(matches!(
            http.validate(),
            Err(OpcUaError::InvalidEndpoint { .. })
        ));
        let lonely_user =
            parse("[opcua]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\nuser = \"u\"\n");
        assert!(matches!(
            lonely_user.validate(),
            Err(OpcUaError::Invalid { .. })
        ));
        let backwards = parse(
            "[opcua]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\nreconnect = { initial_ms = 10, max_ms = 5 }\n",
        );
        assert!(matches!(
            backwards.validate(),
            Err(OpcUaError::Invalid { .. })
        ));
        let negative = parse(
            "[opcua]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\n[[opcua.asset]]\npath = \"a/b\"\nchannels = [{ channel = \"t\", node = \"ns=2;i=1\", deadband = -1.0 }]\n",
        );
        assert!(matches!(
            negative.validate(),
            Err(OpcUaError::Invalid { .. })
        ));
        assert!(OpcUaConfig::from_toml(
            "[opcua]\nname = \"a\"\nendpoint = \"opc.tcp://h:1\"\nsecurity_policy = \"Basic128Rsa15\"\n"
        )
        .is_err());
    }
}
