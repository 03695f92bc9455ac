//! The API's configuration: where it listens, who may call it, TLS and limits.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use doppel_runtime::Origin;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Shortest accepted bearer token, in bytes: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// Longest accepted bearer token, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// The `[api]` table of a node's config.
///
/// ```toml
/// [api]
/// listen = "0.0.0.0:50051"
/// tokens = [
///   { name = "ann", token = "…32 random characters…", role = "operator" },
///   { name = "dashboard", token = "…", role = "viewer" },
/// ]
/// tls = { cert = "api.pem", key = "api.key" }   # optional; PEM files
///
/// [api.limits]                                   # optional
/// max_watches = 20000
///
/// [api.http]                                     # optional: REST/JSON and the console
/// listen = "0.0.0.0:8080"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// The address to serve on; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Bearer tokens, each bound to a role. Without any, every call to TwinService is
    /// refused (health checks and reflection still answer).
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// Serve over TLS with this certificate; plain HTTP/2 when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Limits that protect the node from its clients.
    #[serde(default)]
    pub limits: ApiLimits,
    /// The REST/JSON API and the web console (`[api.http]`); not served when absent.
    #[serde(default)]
    pub http: Option<crate::http::HttpConfig>,
}

/// One bearer token and what it may do. Its `Debug` output hides the token.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds the token: recorded as the principal of their commands.
    pub name: String,
    /// The secret, sent as `authorization: Bearer <token>`; printable ASCII without
    /// spaces, [`MIN_TOKEN_LEN`]..=[`MAX_TOKEN_LEN`] bytes.
    pub token: String,
    /// What the holder may do.
    pub role: Role,
}

impl fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .field("role", &self.role)
            .finish()
    }
}

/// What a token's holder may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read twins, history and audit; watch; simulate.
    Viewer,
    /// A viewer that may also send commands, recorded as operator commands.
    Operator,
    /// A viewer that may also send commands, recorded as planner commands.
    Planner,
    /// Everything.
    Admin,
}

impl Role {
    /// The role's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Planner => "planner",
            Role::Admin => "admin",
        }
    }

    /// The role named `name` (as [`Role::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        [Role::Viewer, Role::Operator, Role::Planner, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == name)
    }

    /// True when the role may send commands.
    pub fn may_command(self) -> bool {
        !matches!(self, Role::Viewer)
    }

    /// The origin a command from `principal` in this role is recorded with: planner
    /// tokens send planner commands, every other role operator commands.
    pub fn origin(self, principal: &str) -> Origin {
        match self {
            Role::Planner => Origin::planner(principal),
            Role::Viewer | Role::Operator | Role::Admin => Origin::operator(principal),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The API's certificate: PEM files. Relative paths are resolved by whoever reads the
/// config (a node resolves them against its config file's directory).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
}

/// Limits that keep clients from overwhelming a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// Concurrent `WatchTwins` streams on this node; more are refused with
    /// RESOURCE_EXHAUSTED.
    pub max_watches: usize,
    /// Messages queued for each watcher's client.
    pub watch_buffer: usize,
    /// How long a watcher's client may leave its full queue undrained before the
    /// watch is ended as too slow, in milliseconds. Changes keep buffering in the
    /// node's change bus meanwhile; a watcher that falls behind the bus ends at once.
    pub watch_stall_ms: u64,
    /// Unary calls served at once; more are refused with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// Largest request message accepted, in bytes.
    pub max_request_bytes: usize,
    /// Concurrent calls (HTTP/2 streams) on one client connection; more wait.
    pub max_streams_per_connection: u32,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_watches: 20_000,
            watch_buffer: 1024,
            watch_stall_ms: 5000,
            max_in_flight: 10_000,
            max_request_bytes: 1 << 20,
            max_streams_per_connection: 1024,
        }
    }
}

impl ApiConfig {
    /// A config serving on `listen` with no tokens, no TLS and default limits.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            tokens: Vec::new(),
            tls: None,
            limits: ApiLimits::default(),
            http: None,
        }
    }

    /// Also serves the REST/JSON API and the console on `listen`.
    pub fn http(mut self, listen: SocketAddr) -> Self {
        self.http = Some(crate::http::HttpConfig { listen });
        self
    }

    /// Adds a bearer token for `name` with `role`.
    pub fn token(mut self, name: impl Into<String>, token: impl Into<String>, role: Role) -> Self {
        self.tokens.push(TokenConfig {
            name: name.into(),
            token: token.into(),
            role,
        });
        self
    }

    /// Serves over TLS with the PEM certificate chain and key at these paths.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls = Some(TlsConfig {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Checks tokens and limits. Messages never contain a token.
    pub fn validate(&self) -> Result<(), ApiError> {
        let mut names = HashSet::new();
        let mut secrets = HashSet::new();
        for (index, entry) in self.tokens.iter().enumerate() {
            let at = format!("api.tokens[{index}]");
            if entry.name.is_empty() || entry.name.chars().count() > 128 {
                return Err(ApiError::Config(format!(
                    "{at}.name must be 1 to 128 characters"
                )));
            }
            if entry.name.chars().any(char::is_control) {
                return Err(ApiError::Config(format!(
                    "{at}.name must not contain control characters"
                )));
            }
            if !names.insert(entry.name.as_str()) {
                return Err(ApiError::Config(format!(
                    "{at}: two tokens are named `{}`",
                    entry.name
                )));
            }
            let length = entry.token.len();
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&length) {
                return Err(ApiError::Config(format!(
                    "{at}.token (of `{}`) must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} bytes, not {length}",
                    entry.name
                )));
            }
            if !entry.token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ApiError::Config(format!(
                    "{at}.token (of `{}`) must be printable ASCII without spaces",
                    entry.name
                )));
            }
            if !secrets.insert(entry.token.as_str()) {
                return Err(ApiError::Config(format!(
                    "{at}.token (of `{}`) is also another entry's token",
                    entry.name
                )));
            }
        }
        let limits = &self.limits;
        for (field, value) in [
            ("max_watches", limits.max_watches),
            ("watch_buffer", limits.watch_buffer),
            (
                "watch_stall_ms",
                usize::try_from(limits.watch_stall_ms).unwrap_or(usize::MAX),
            ),
            ("max_in_flight", limits.max_in_flight),
            ("max_request_bytes", limits.max_request_bytes),
            (
                "max_streams_per_connection",
                limits.max_streams_per_connection as usize,
            ),
        ] {
            if value == 0 {
                return Err(ApiError::Config(format!(
                    "api.limits.{field} must be at least 1"
                )));
            }
        }
        if limits.watch_buffer > 1_000_000 {
            return Err(ApiError::Config(
                "api.limits.watch_buffer must be at most 1000000".to_string(),
            ));
        }
        if limits.max_request_bytes < 4096 {
            return Err(ApiError::Config(
                "api.limits.max_request_bytes must be at least 4096".to_string(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_shape() {
        let config: ApiConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:50051"
            tokens = [
              { name = "ann", token = "0123456789abcdef0123", role = "operator" },
              { name = "fleet", token = "fedcba9876543210fedc", role = "planner" },
            ]
            tls = { cert = "api.pem", key = "api.key" }
            [limits]
            max_watches = 5
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.tokens[1].role, Role::Planner);
        assert_eq!(config.limits.max_watches, 5);
        assert_eq!(
            config.limits.watch_buffer,
            ApiLimits::default().watch_buffer
        );
        assert_eq!(config.tls.unwrap().cert, PathBuf::from("api.pem"));
    }

    #[test]
    fn refuses_unknown_fields_and_roles() {
        assert!(toml::from_str::<ApiConfig>("listen = \"127.0.0.1:1\"\nport = 3").is_err());
        let bad_role = r#"
            listen = "127.0.0.1:1"
            tokens = [{ name = "x", token = "0123456789abcdef", role = "root" }]
        "#;
        assert!(toml::from_str::<ApiConfig>(bad_role).is_err());
    }

    #[test]
    fn validation_names_the_problem_and_never_the_token() {
        let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let short = ApiConfig::new(listen).token("ann", "s3cret", Role::Admin);
        let message = short.validate().unwrap_err().to_string();
        assert!(message.contains("api.tokens[0].token"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");

        let spaced = ApiConfig::new(listen).token("ann", "has a space in it!!", Role::Admin);
        assert!(spaced.validate().is_err());

        let twice = ApiConfig::new(listen)
            .token("ann", "0123456789abcdef", Role::Admin)
            .token("bob", "0123456789abcdef", Role::Viewer);
        let message = twice.validate().unwrap_err().to_string();
        assert!(message.contains("api.tokens[1]"), "{message}");
        assert!(!message.contains("0123456789abcdef"), "{message}");

        let same_name = ApiConfig::new(listen)
            .token("ann", "0123456789abcdef", Role::Admin)
            .token("ann", "fedcba9876543210", Role::Viewer);
        assert!(same_name.validate().is_err());

        let mut no_watches = ApiConfig::new(listen);
        no_watches.limits.max_watches = 0;
        assert!(no_watches.validate().is_err());
        let mut huge_buffer = ApiConfig::new(listen);
        huge_buffer.limits.watch_buffer = usize::MAX;
        assert!(huge_buffer.validate().is_err());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let config = ApiConfig::new("127.0.0.1:0".parse().unwrap()).token(
            "ann",
            "do-not-print-this-secret",
            Role::Operator,
        );
        let printed = format!("{config:?}");
        assert!(!printed.contains("do-not-print-this-secret"), "{printed}");
        assert!(printed.contains("ann"));
    }

    #[test]
    fn roles_map_to_origins() {
        use doppel_runtime::OriginKind;
        assert_eq!(Role::Planner.origin("p").kind, OriginKind::Planner);
        assert_eq!(Role::Operator.origin("o").kind, OriginKind::Operator);
        assert_eq!(Role::Admin.origin("a").kind, OriginKind::Operator);
        assert!(!Role::Viewer.may_command());
        assert!(Role::Planner.may_command());
    }
}
