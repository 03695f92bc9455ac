//! A certificate authority for TLS tests, made with rcgen (no openssl command line).
//! Validity is placed around the clock at run time: a day back, thirty days ahead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// How long before now a certificate becomes valid, for clocks slightly apart.
const BACKDATED: Duration = Duration::from_secs(24 * 3600);
/// How long after now a certificate stays valid.
const VALID_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

fn valid_from_now(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATED).into();
    params.not_after = (now + VALID_FOR).into();
}

/// A certificate authority that issues server and client certificates (P-256 keys).
pub struct CertificateAuthority {
    params: CertificateParams,
    key: KeyPair,
    certificate_pem: String,
}

impl CertificateAuthority {
    /// A new CA whose common name is `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names to check");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        valid_from_now(&mut params);
        let key = KeyPair::generate().expect("a P-256 key");
        let certificate_pem = params.self_signed(&key).expect("the CA signs itself").pem();
        Self {
            params,
            key,
            certificate_pem,
        }
    }

    /// The CA's certificate, PEM.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// Writes the CA's certificate to `path` and returns the path.
    pub fn write_certificate(&self, path: &Path) -> PathBuf {
        std::fs::write(path, &self.certificate_pem).expect("the CA certificate is written");
        path.to_path_buf()
    }

    /// A certificate for `common_name`, valid for the DNS names and IP addresses in
    /// `names`, for server and client authentication.
    pub fn issue(&self, common_name: &str, names: &[&str]) -> Issued {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("valid names");
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        valid_from_now(&mut params);
        let key = KeyPair::generate().expect("a P-256 key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer).expect("the CA signs");
        Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A certificate and its private key, PEM.
pub struct Issued {
    /// The certificate.
    pub certificate_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
}

impl Issued {
    /// Writes `<stem>.pem` and `<stem>.key` into `dir`; returns (certificate, key) paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let certificate = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&certificate, &self.certificate_pem).expect("the certificate is written");
        std::fs::write(&key, &self.key_pem).expect("the key is written");
        (certificate, key)
    }
}

/// A self-signed certificate for `names`, for a server that a client trusts directly.
pub fn self_signed(names: &[&str]) -> Issued {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("valid names");
    valid_from_now(&mut params);
    let key = KeyPair::generate().expect("a P-256 key");
    let certificate = params
        .self_signed(&key)
        .expect("the certificate signs itself");
    Issued {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}
