//! Trusting a server: fetch the certificate it presents at discovery, show what an
//! administrator checks (common name, thumbprint, validity, the security it offers),
//! and file it under the connector's `trusted/` with the name async-opcua looks it up
//! by, taking any copy out of `rejected/`.

use std::path::{Path, PathBuf};

use opcua::crypto::{CertificateStore, X509};
use opcua::types::{EndpointDescription, MessageSecurityMode};

use super::config::OpcUaConfig;
use super::connector::{client_for, pki_dir};
use super::error::OpcUaError;

/// A server's certificate, as it presents it in its endpoint descriptions.
#[derive(Debug, Clone)]
pub struct ServerCertificate {
    /// The endpoint it was fetched from.
    pub endpoint: String,
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Its subject's common name (empty when it has none).
    pub common_name: String,
    /// Its SHA-1 thumbprint, hexadecimal: what an administrator compares.
    pub thumbprint: String,
    /// The end of its validity, RFC 3339.
    pub not_after: String,
    /// The file name it must have in `trusted/`.
    pub file_name: String,
    /// The security the server offers, as `<policy> <mode>`, one per endpoint.
    pub offered: Vec<String>,
}

/// Where a trusted certificate went.
#[derive(Debug, Clone)]
pub struct Trusted {
    /// The file in `trusted/`.
    pub file: PathBuf,
    /// Copies of it taken out of `rejected/`.
    pub removed_from_rejected: Vec<PathBuf>,
}

/// The security each endpoint of `endpoints` offers, as `<policy> <mode>`.
pub(crate) fn offered(endpoints: &[EndpointDescription]) -> Vec<String> {
    let mut offered: Vec<String> = endpoints
        .iter()
        .map(|endpoint| {
            let uri = endpoint.security_policy_uri.as_ref();
            // The URI's fragment without underscores is the name `security_policy`
            // takes (`…#Aes256_Sha256_RsaPss` → `Aes256Sha256RsaPss`).
            let policy = uri.rsplit('#').next().unwrap_or(uri).replace('_', "");
            format!("{policy} {}", mode_name(endpoint.security_mode))
        })
        .collect();
    offered.sort();
    offered.dedup();
    offered
}

fn mode_name(mode: MessageSecurityMode) -> &'static str {
    match mode {
        MessageSecurityMode::None => "None",
        MessageSecurityMode::Sign => "Sign",
        MessageSecurityMode::SignAndEncrypt => "SignAndEncrypt",
        MessageSecurityMode::Invalid => "Invalid",
    }
}

/// Asks the server at `endpoint` (the connector's own endpoint when `None`) for its
/// endpoints, and returns the certificate it presents in them. Discovery needs no
/// trust: this is what an administrator checks before trusting the server.
pub async fn server_certificate(
    config: &OpcUaConfig,
    data_dir: &Path,
    endpoint: Option<&str>,
) -> Result<ServerCertificate, OpcUaError> {
    let endpoint = endpoint.unwrap_or(&config.endpoint).to_string();
    let pki = pki_dir(config, data_dir);
    let client = client_for(config, &pki).await?;
    let failed = |problem: String| OpcUaError::Discovery {
        connector: config.name.clone(),
        endpoint: endpoint.clone(),
        problem,
    };
    let timeout = std::time::Duration::from_millis(config.request_timeout_ms);
    let endpoints = tokio::time::timeout(
        timeout,
        client.get_server_endpoints_from_url(endpoint.as_str()),
    )
    .await
    .map_err(|_| failed("timed out".to_string()))?
    .map_err(|error| failed(error.to_string()))?;
    let der = endpoints
        .iter()
        .find_map(|e| e.server_certificate.value.clone().filter(|c| !c.is_empty()))
        .ok_or_else(|| failed("the server presents no certificate".to_string()))?;
    let cert = X509::from_der(&der).map_err(|error| failed(format!("{error:?}")))?;
    Ok(ServerCertificate {
        endpoint: endpoint.clone(),
        common_name: cert.common_name().unwrap_or_default(),
        thumbprint: cert.thumbprint().as_hex_string(),
        not_after: cert
            .not_after()
            .map(|at| at.to_rfc3339())
            .unwrap_or_else(|_| "unknown".to_string()),
        file_name: CertificateStore::cert_file_name(&cert),
        offered: offered(&endpoints),
        der,
    })
}

/// Files `certificate` under the connector's `trusted/` and removes every copy of it
/// (same thumbprint) from `rejected/`.
pub fn trust(
    config: &OpcUaConfig,
    data_dir: &Path,
    certificate: &ServerCertificate,
) -> Result<Trusted, OpcUaError> {
    let pki = pki_dir(config, data_dir);
    let io = |problem: std::io::Error| OpcUaError::Pki {
        connector: config.name.clone(),
        dir: pki.clone(),
        problem: problem.to_string(),
    };
    let trusted = pki.join("trusted");
    std::fs::create_dir_all(&trusted).map_err(io)?;
    let file = trusted.join(&certificate.file_name);
    std::fs::write(&file, &certificate.der).map_err(io)?;
    let mut removed_from_rejected = Vec::new();
    if let Ok(entries) = std::fs::read_dir(pki.join("rejected")) {
        for entry in entries.flatten() {
            let path = entry.path();
            let same = CertificateStore::read_cert(&path)
                .is_ok_and(|cert| cert.thumbprint().as_hex_string() == certificate.thumbprint);
            if same {
                std::fs::remove_file(&path).map_err(io)?;
                removed_from_rejected.push(path);
            }
        }
    }
    Ok(Trusted {
        file,
        removed_from_rejected,
    })
}
