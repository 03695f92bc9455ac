//! TLS to the broker (`mqtts://`): rustls on the ring provider, the broker verified
//! against the configured CA certificates (or the system's), and an optional client
//! certificate for brokers that require one (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::{TlsConfiguration, Transport};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;

/// The `[mqtt.tls]` table: how to reach a broker over TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTls {
    /// CA certificates (PEM) the broker's certificate must chain to. Without it, the
    /// system's trusted CAs (`SSL_CERT_FILE`, else the platform's store).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM, leaf first), for a broker that requires client
    /// certificates. Needs `key`.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// The name the broker's certificate must be valid for, when it is not the URL's
    /// host (a broker reached by IP address whose certificate names its DNS name).
    #[serde(default)]
    pub server_name: Option<String>,
}

impl MqttTls {
    /// Resolves relative paths against `base` (the config file's directory).
    pub fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.ca, &mut self.cert, &mut self.key]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Reads the certificates and key and builds the transport; every problem is one
    /// sentence naming the file.
    pub fn transport(&self) -> Result<Transport, String> {
        let name = match &self.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                format!("tls.server_name `{name}` is not a DNS name or IP address")
            })?),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.roots()?);
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|error| format!("tls: {error}"))?;
        let builder = match name {
            None => builder.with_root_certificates(roots),
            Some(name) => {
                let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                    .build()
                    .map_err(|error| format!("tls: {error}"))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NamedServer {
                        name,
                        verifier,
                        provider,
                    }))
            }
        };
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert)?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|error| format!("tls.key {}: {error}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| format!("tls.cert and tls.key: {error}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("tls.cert and tls.key go together: give both or neither".into()),
        };
        Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )))
    }

    fn roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.ca {
            Some(path) => {
                for certificate in certificates(path)? {
                    roots
                        .add(certificate)
                        .map_err(|error| format!("tls.ca {}: {error}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(format!(
                        "tls: no system CA certificates found ({}); name the broker's CA with tls.ca",
                        found
                            .errors
                            .first()
                            .map_or_else(|| "the store is empty".to_string(), ToString::to_string)
                    ));
                }
            }
        }
        Ok(roots)
    }
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certificates = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| format!("{}: {error}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certificates)
}

/// Verifies the broker's certificate as usual, but for the configured name instead
/// of the URL's host.
#[derive(Debug)]
struct NamedServer {
    name: ServerName<'static>,
    verifier: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NamedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialled: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_cannot_work_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = MqttTls {
            ca: Some(junk.clone()),
            ..MqttTls::default()
        };
        let error = tls.transport().err().unwrap();
        assert!(
            error.contains("junk.pem") && error.contains("no PEM certificate"),
            "{error}"
        );
        let missing = MqttTls {
            ca: Some(dir.path().join("missing.pem")),
            ..MqttTls::default()
        };
        assert!(missing.transport().err().unwrap().contains("missing.pem"));
        let half = MqttTls {
            cert: Some(junk),
            ..MqttTls::default()
        };
        assert!(half.transport().err().unwrap().contains("go together"));
        let unnamed = MqttTls {
            server_name: Some("not a name!".into()),
            ..MqttTls::default()
        };
        assert!(
            unnamed
                .transport()
                .err()
                .unwrap()
                .contains("not a DNS name"),
        );
    }
}
