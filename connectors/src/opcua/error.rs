//! Why an OPC UA connector refuses to start.

use std::path::PathBuf;

use doppel_runtime::AssetPath;

use super::config::{SecurityMode, SecurityPolicy};

/// Everything that stops an OPC UA connector from starting. Once started, a connector
/// never fails: lost connections are retried, bad values are counted and dropped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OpcUaError {
    /// The configuration text is not valid TOML or not the expected shape.
    #[error("opcua config: {0}")]
    Config(String),
    /// A configured value is out of its allowed range or contradicts another.
    #[error("opcua connector `{connector}`: {problem}")]
    Invalid {
        /// The connector.
        connector: String,
        /// What is wrong.
        problem: String,
    },
    /// The endpoint URL is not an `opc.tcp://` URL.
    #[error("opcua connector `{connector}`: endpoint `{endpoint}` is not an opc.tcp:// URL")]
    InvalidEndpoint {
        /// The connector.
        connector: String,
        /// The configured endpoint.
        endpoint: String,
    },
    /// The endpoint has no message security and `allow_insecure` is not set.
    #[error(
        "opcua connector `{connector}`: endpoint `{endpoint}` uses security policy {policy} and mode {mode}, \
         which neither signs nor encrypts; set allow_insecure = true to connect anyway"
    )]
    InsecureEndpoint {
        /// The connector.
        connector: String,
        /// The configured endpoint.
        endpoint: String,
        /// The configured policy.
        policy: SecurityPolicy,
        /// The configured mode.
        mode: SecurityMode,
    },
    /// Security policy `None` goes only with mode `None`, and the other way round.
    #[error(
        "opcua connector `{connector}`: security policy {policy} cannot be used with mode {mode}"
    )]
    InconsistentSecurity {
        /// The connector.
        connector: String,
        /// The configured policy.
        policy: SecurityPolicy,
        /// The configured mode.
        mode: SecurityMode,
    },
    /// A node id does not parse.
    #[error("opcua connector `{connector}`: asset `{asset}`: `{node}` is not a valid node id")]
    InvalidNodeId {
        /// The connector.
        connector: String,
        /// The asset whose mapping names the node.
        asset: AssetPath,
        /// The node id as written.
        node: String,
    },
    /// No twin has the mapped asset path.
    #[error("opcua connector `{connector}`: unknown asset `{asset}`")]
    UnknownAsset {
        /// The connector.
        connector: String,
        /// The asset.
        asset: AssetPath,
    },
    /// The asset's twin type has no such channel.
    #[error("opcua connector `{connector}`: asset `{asset}` has no channel `{channel}`")]
    UnknownChannel {
        /// The connector.
        connector: String,
        /// The asset.
        asset: AssetPath,
        /// The channel.
        channel: String,
    },
    /// The asset's twin type has no such desired value.
    #[error("opcua connector `{connector}`: asset `{asset}` has no desired value `{desired}`")]
    UnknownDesired {
        /// The connector.
        connector: String,
        /// The asset.
        asset: AssetPath,
        /// The desired value.
        desired: String,
    },
    /// The asset's twin type has no such command.
    #[error("opcua connector `{connector}`: asset `{asset}` has no command `{command}`")]
    UnknownCommand {
        /// The connector.
        connector: String,
        /// The asset.
        asset: AssetPath,
        /// The command.
        command: String,
    },
    /// A method argument names a parameter the command does not declare.
    #[error(
        "opcua connector `{connector}`: asset `{asset}`: command `{command}` has no parameter `{param}`"
    )]
    UnknownParam {
        /// The connector.
        connector: String,
        /// The asset.
        asset: AssetPath,
        /// The command.
        command: String,
        /// The parameter.
        param: String,
    },
    /// A method argument names a parameter that sets no desired value: no governor
    /// reviews it, so it may not leave the twin.
    #[error(
        "opcua connector `{connector}`: asset `{asset}`: parameter `{param}` of command `{command}` sets no desired value, so no governor reviews it; a method argument can only carry a governed value"
    )]
    UngovernedParam {
        /// The connector.
        connector: String,
        /// The asset.
        asset: AssetPath,
        /// The command.
        command: String,
        /// The parameter.
        param: String,
    },
    /// The PKI directory or the connector's own certificate cannot be created.
    #[error("opcua connector `{connector}`: pki directory `{}`: {problem}", dir.display())]
    Pki {
        /// The connector.
        connector: String,
        /// The PKI directory.
        dir: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// A session with the server could not be opened, or a request on it failed
    /// (`doppel opcua browse`).
    #[error("opcua connector `{connector}`: `{endpoint}`: {problem}")]
    Session {
        /// The connector.
        connector: String,
        /// The endpoint.
        endpoint: String,
        /// What went wrong.
        problem: String,
    },
    /// The server's endpoints could not be read (discovery).
    #[error("opcua connector `{connector}`: asking `{endpoint}` for its endpoints: {problem}")]
    Discovery {
        /// The connector.
        connector: String,
        /// The endpoint asked.
        endpoint: String,
        /// What went wrong.
        problem: String,
    },
    /// The async-opcua client refused its configuration.
    #[error("opcua connector `{connector}`: client configuration: {problem}")]
    Client {
        /// The connector.
        connector: String,
        /// What the client reported.
        problem: String,
    },
    /// The data source could not be registered with the node.
    #[error("opcua connector `{connector}`: {source}")]
    Runtime {
        /// The connector.
        connector: String,
        /// The kernel's error.
        source: doppel_runtime::Error,
    },
}
