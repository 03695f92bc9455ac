//! `doppel opcua browse`: walk a server's address space over a session opened exactly
//! as the connector opens one (same security policy and mode, PKI directory, trust
//! rules and identity), and propose a twin type and mapping for what it finds.
//!
//! # The walk
//!
//! From the root (the Objects folder, `i=85`, by default) the walk follows
//! hierarchical references (HierarchicalReferences and its subtypes) forward,
//! breadth-first, with `Browse` and `BrowseNext` for continuation points. Nodes more
//! than `max_depth` levels below the root and nodes past `max_nodes` are not followed,
//! and the proposal's `Cut` says so. The server's own object (`i=2253`) is not walked.
//!
//! It reads each variable's DataType, ValueRank, AccessLevel, UserAccessLevel and
//! Value, and its `EURange` (a `Range`) and `EngineeringUnits` (an `EUInformation`)
//! properties; each method's UserExecutable attribute and `InputArguments` property.
//!
//! # What it proposes
//!
//! - A readable numeric or Boolean scalar variable becomes a channel, ranged by its
//!   EURange or else by the span of its data type, its unit the display name of its
//!   EngineeringUnits.
//! - A writable one also becomes a desired value of the same name, reported on that
//!   channel and written to the variable, and a `set_<name>` command whose parameter
//!   `value` sets it, bounded by the EURange.
//! - A method whose input arguments are all numeric or Boolean scalars becomes a
//!   command with one parameter per argument. A method argument only ever carries a
//!   governed value, so each parameter sets a desired value `<command>_<parameter>`;
//!   the connector calls a method for a command that sets a value, so a method
//!   without arguments sets `<command>_requested = true`.
//!
//! Every other node found (strings, arrays, structures, methods with other arguments,
//! nodes that cannot be read) is listed in `Proposal::skipped` with the reason.

mod propose;
mod walk;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use doppel_runtime::AssetPath;
use opcua::client::{Client, IdentityToken, Session};
use opcua::crypto::{CertificateStore, X509};
use opcua::types::{EndpointDescription, NodeId, StatusCode, SubStatusCode};

use self::propose::propose;
use self::walk::survey;
use super::config::OpcUaConfig;
use super::connector::{AbortOnDrop, client_for, close, loop_status, offered_instead, pki_dir};
use super::error::OpcUaError;
use super::proposal::Proposal;

/// What `doppel opcua browse` walks, how far, and how it names what it proposes.
#[derive(Debug, Clone, PartialEq)]
pub struct BrowseOptions {
    /// The node the walk starts from, as text (`ns=2;s=Press1`); the Objects folder
    /// (`i=85`) when `None`.
    pub root: Option<String>,
    /// The asset path the mapping is for (`acme/plant-a/line-1/press-1`); a
    /// placeholder, `plant/line/<type name>`, when `None`.
    pub asset: Option<AssetPath>,
    /// The proposed twin type's name: letters, digits, `_` and `-`. The root's browse
    /// name in snake case when `None`.
    pub type_name: Option<String>,
    /// How many levels below the root the walk follows.
    pub max_depth: usize,
    /// How many nodes the walk visits at most, the root included.
    pub max_nodes: usize,
    /// The sampling interval proposed for every channel, in milliseconds.
    pub sampling_ms: u64,
}

impl BrowseOptions {
    /// The default depth limit.
    pub const DEFAULT_MAX_DEPTH: usize = 6;
    /// The default node limit.
    pub const DEFAULT_MAX_NODES: usize = 5000;
    /// The default sampling interval, the connector's own default.
    pub const DEFAULT_SAMPLING_MS: u64 = 100;

    /// Checks the options and returns the root node.
    fn root_node(&self, connector: &str) -> Result<NodeId, OpcUaError> {
        let invalid = |problem: String| OpcUaError::Invalid {
            connector: connector.to_string(),
            problem,
        };
        if self.max_depth == 0 || self.max_nodes == 0 || self.sampling_ms == 0 {
            return Err(invalid(
                "browsing needs a depth limit, a node limit and a sampling interval of at least 1"
                    .to_string(),
            ));
        }
        if let Some(name) = &self.type_name {
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !plain {
                return Err(invalid(format!(
                    "type name `{name}` must be letters, digits, `_` and `-`"
                )));
            }
        }
        match &self.root {
            None => Ok(NodeId::objects_folder_id()),
            Some(text) => NodeId::from_str(text.trim()).map_err(|_| {
                invalid(format!(
                    "root `{text}` is not a node id (`ns=<index>;s=<name>`, `ns=<index>;i=<number>`)"
                ))
            }),
        }
    }
}

impl Default for BrowseOptions {
    fn default() -> Self {
        Self {
            root: None,
            asset: None,
            type_name: None,
            max_depth: Self::DEFAULT_MAX_DEPTH,
            max_nodes: Self::DEFAULT_MAX_NODES,
            sampling_ms: Self::DEFAULT_SAMPLING_MS,
        }
    }
}

/// Opens a session with the server at `endpoint` (the connector's own when `None`) as
/// the connector `config` would — its security policy and mode (an insecure endpoint
/// refused unless `allow_insecure`), its PKI directory under `data_dir`, its trust
/// rules (an unknown server certificate is stored in `rejected/` and refused unless
/// `trust_server_certificate`) and its identity — walks the address space from
/// `options.root` and proposes a twin type and mapping: a channel for every readable
/// numeric or Boolean scalar variable, a desired value and `set_<name>` command for
/// every writable one, a command for every method whose arguments are all numeric or
/// Boolean, and every other node found in [`Proposal::skipped`] with the reason.
pub async fn browse(
    config: &OpcUaConfig,
    data_dir: &Path,
    endpoint: Option<&str>,
    options: &BrowseOptions,
) -> Result<Proposal, OpcUaError> {
    let mut config = config.clone();
    if let Some(endpoint) = endpoint {
        config.endpoint = endpoint.to_string();
    }
    config.validate()?;
    let root = options.root_node(&config.name)?;
    let pki = pki_dir(&config, data_dir);
    let client = client_for(&config, &pki).await?;
    let opened = open(&config, client, &pki).await?;
    let surveyed = survey(&opened.session, &root, options).await;
    close(&opened.session).await;
    drop(opened);
    let (survey, facts) = surveyed.map_err(|problem| failure(&config, problem))?;
    Ok(propose(config, survey, facts, options))
}

/// A session, open, and its event loop.
struct Opened {
    session: Arc<Session>,
    /// Aborts the event loop once the walk is over.
    _event_loop: AbortOnDrop,
    /// The client the session came from.
    _client: Client,
}

/// How opening the session ended.
enum Opening {
    Open,
    TimedOut,
    Ended(Result<StatusCode, tokio::task::JoinError>),
}

/// Connects as the connector's session loop does, without reconnects: a refusal is
/// the answer.
async fn open(config: &OpcUaConfig, mut client: Client, pki: &Path) -> Result<Opened, OpcUaError> {
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let endpoint: EndpointDescription = (
        config.endpoint.as_str(),
        config.security_policy.to_opcua().to_uri(),
        config.security_mode.to_opcua(),
    )
        .into();
    let identity = match (&config.user, &config.password) {
        (Some(user), Some(password)) => {
            IdentityToken::new_user_name(user.clone(), password.expose())
        }
        _ => IdentityToken::Anonymous,
    };
    let wanted = (endpoint.security_policy_uri.clone(), endpoint.security_mode);
    let connected = tokio::time::timeout(
        timeout,
        client.connect_to_matching_endpoint(endpoint, identity),
    )
    .await;
    let (session, event_loop) = match connected {
        Ok(Ok(pair)) => pair,
        Ok(Err(error)) => {
            let problem = offered_instead(&client, config, &wanted, timeout)
                .await
                .unwrap_or_else(|| error.to_string());
            return Err(failure(config, problem));
        }
        Err(_) => {
            return Err(failure(
                config,
                "timed out asking for endpoints".to_string(),
            ));
        }
    };
    session.disable_reconnects();
    let mut event_loop = AbortOnDrop(event_loop.spawn());
    let opening = tokio::select! {
        connected = tokio::time::timeout(timeout, session.wait_for_connection()) => {
            if matches!(connected, Ok(true)) { Opening::Open } else { Opening::TimedOut }
        }
        status = &mut event_loop.0 => Opening::Ended(status),
    };
    match opening {
        Opening::Open => Ok(Opened {
            session,
            _event_loop: event_loop,
            _client: client,
        }),
        Opening::TimedOut => Err(failure(config, "timed out opening the session".to_string())),
        Opening::Ended(status) => {
            let problem = refusal(&client, config, pki, status, timeout).await;
            Err(failure(config, problem))
        }
    }
}

/// Why the server refused the session: for an untrusted certificate, where it was
/// stored and how to trust it.
async fn refusal(
    client: &Client,
    config: &OpcUaConfig,
    pki: &Path,
    status: Result<StatusCode, tokio::task::JoinError>,
    timeout: Duration,
) -> String {
    let untrusted = matches!(
        &status,
        Ok(code) if matches!(
            code.sub_code(),
            SubStatusCode::BadCertificateUntrusted | SubStatusCode::BadSecurityChecksFailed
        )
    );
    if untrusted && let Some(file) = rejected_certificate(client, config, pki, timeout).await {
        return format!(
            "the server's certificate is not trusted; it is stored as {}; check its thumbprint (in the file name) with the server's administrator, then move the file to {} keeping its name, or trust it with `doppel opcua trust --config FILE`",
            file.display(),
            pki.join("trusted").display()
        );
    }
    loop_status(status)
}

/// The server's certificate in the PKI directory's `rejected/`, if it is there.
async fn rejected_certificate(
    client: &Client,
    config: &OpcUaConfig,
    pki: &Path,
    timeout: Duration,
) -> Option<PathBuf> {
    let endpoints = super::connector::server_endpoints(client, config, timeout).await?;
    let der = endpoints
        .iter()
        .find_map(|e| e.server_certificate.value.clone().filter(|c| !c.is_empty()))?;
    let certificate = X509::from_der(&der).ok()?;
    let file = pki
        .join("rejected")
        .join(CertificateStore::cert_file_name(&certificate));
    file.is_file().then_some(file)
}

fn failure(config: &OpcUaConfig, problem: String) -> OpcUaError {
    OpcUaError::Session {
        connector: config.name.clone(),
        endpoint: config.endpoint.clone(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked_before_connecting() {
        let check = |options: BrowseOptions| options.root_node("press-line");
        assert_eq!(
            check(BrowseOptions::default()).unwrap(),
            NodeId::objects_folder_id()
        );
        let rooted = BrowseOptions {
            root: Some("ns=2;s=Press1".to_string()),
            ..BrowseOptions::default()
        };
        assert_eq!(check(rooted).unwrap(), NodeId::new(2, "Press1"));
        for bad in [
            BrowseOptions {
                root: Some("Press1".to_string()),
                ..BrowseOptions::default()
            },
            BrowseOptions {
                max_depth: 0,
                ..BrowseOptions::default()
            },
            BrowseOptions {
                type_name: Some("press line".to_string()),
                ..BrowseOptions::default()
            },
        ] {
            assert!(matches!(check(bad), Err(OpcUaError::Invalid { .. })));
        }
    }
}
