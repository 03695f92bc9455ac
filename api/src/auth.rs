//! Bearer tokens: who is calling, with which role.
//!
//! Every TwinService call passes through [`Authenticator`], which reads
//! `authorization: Bearer <token>`, finds the token among the configured ones in
//! constant time and attaches the [`Caller`] to the request. Each RPC then checks the
//! role it needs. Tokens never appear in logs or error messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::config::{MAX_TOKEN_LEN, Role, TokenConfig};

/// The authenticated caller of a request, as the RPCs see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name: the principal of the caller's commands.
    pub name: Arc<str>,
    /// The token's role.
    pub role: Role,
}

impl Caller {
    /// Refuses with PERMISSION_DENIED unless the caller may send commands.
    pub(crate) fn require_command(&self, rpc: &str) -> Result<(), Status> {
        if self.role.may_command() {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{rpc} needs an operator, planner or admin token; `{}` is a {}",
                self.name, self.role
            )))
        }
    }
}

/// The request's caller, or UNAUTHENTICATED when no [`Authenticator`] admitted it.
pub(crate) fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

struct Credential {
    digest: [u8; 32],
    caller: Caller,
}

/// Checks bearer tokens against the configured ones; a tonic interceptor.
///
/// Each presented token is hashed (SHA-256) and compared with every configured
/// token's hash without early exit, so neither timing nor length reveals how close a
/// guess came.
#[derive(Clone)]
pub struct Authenticator {
    credentials: Arc<[Credential]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("tokens", &self.credentials.len())
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for these tokens.
    pub fn new(tokens: &[TokenConfig]) -> Self {
        let credentials = tokens
            .iter()
            .map(|entry| Credential {
                digest: Sha256::digest(entry.token.as_bytes()).into(),
                caller: Caller {
                    name: Arc::from(entry.name.as_str()),
                    role: entry.role,
                },
            })
            .collect();
        Self { credentials }
    }

    /// The caller a raw `authorization` header value identifies.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Caller, Status> {
        let Some(header) = authorization else {
            return Err(Status::unauthenticated(
                "missing bearer token: send `authorization: Bearer <token>`",
            ));
        };
        let token = bearer_token(header).ok_or_else(|| {
            Status::unauthenticated("malformed authorization header: expected `Bearer <token>`")
        })?;
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(Status::unauthenticated("invalid bearer token"));
        }
        let presented: [u8; 32] = Sha256::digest(token).into();
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (position, credential) in self.credentials.iter().enumerate() {
            let matches = credential.digest.ct_eq(&presented);
            index = u32::conditional_select(&index, &(position as u32), matches);
            found |= matches;
        }
        if bool::from(found) {
            Ok(self.credentials[index as usize].caller.clone())
        } else {
            Err(Status::unauthenticated("invalid bearer token"))
        }
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, as RFC 6750 allows).
fn bearer_token(header: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = header.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.strip_prefix(b" ")?;
    let start = token.iter().position(|b| *b != b' ')?;
    let end = token.iter().rposition(|b| *b != b' ')? + 1;
    Some(&token[start..end])
}

impl Interceptor for Authenticator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        let caller = self.authenticate(header)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// Name of the file `doppel dev` keeps its admin token in, inside the data directory.
pub const DEV_TOKEN_FILE: &str = "dev-token";

/// The development token kept in `<data_dir>/dev-token`: read if the file holds a
/// valid one, created (32 random bytes, hex; owner-only permissions) otherwise, so the
/// token stays the same across runs on the same data directory.
pub fn load_or_create_dev_token(data_dir: &Path) -> std::io::Result<String> {
    let path: PathBuf = data_dir.join(DEV_TOKEN_FILE);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        let token = existing.trim();
        if token.len() >= crate::config::MIN_TOKEN_LEN
            && token.len() <= MAX_TOKEN_LEN
            && token.bytes().all(|b| b.is_ascii_graphic())
        {
            return Ok(token.to_string());
        }
    }
    std::fs::create_dir_all(data_dir)?;
    let bytes: [u8; 32] = rand::random();
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(&[
            TokenConfig {
                name: "ann".into(),
                token: "operator-token-0123".into(),
                role: Role::Operator,
            },
            TokenConfig {
                name: "viv".into(),
                token: "viewer-token-456789".into(),
                role: Role::Viewer,
            },
        ])
    }

    #[test]
    fn finds_each_token_and_refuses_others() {
        let auth = authenticator();
        let ann = auth
            .authenticate(Some(b"Bearer operator-token-0123"))
            .unwrap();
        assert_eq!((&*ann.name, ann.role), ("ann", Role::Operator));
        let viv = auth
            .authenticate(Some(b"bearer viewer-token-456789"))
            .unwrap();
        assert_eq!(viv.role, Role::Viewer);
        for bad in [
            &b"Bearer operator-token-012"[..],
            b"Bearer operator-token-01234",
            b"Bearer ",
            b"Basic b3BlcmF0b3I=",
            b"operator-token-0123",
            b"Bearer",
            b"",
        ] {
            let status = auth.authenticate(Some(bad)).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
            assert!(!status.message().contains("operator-token"), "{status:?}");
        }
        assert_eq!(
            auth.authenticate(None).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    proptest::proptest! {
        #[test]
        fn any_header_is_answered_without_panicking(header in proptest::collection::vec(proptest::num::u8::ANY, 0..2000)) {
            let result = authenticator().authenticate(Some(&header));
            if let Err(status) = result {
                proptest::prop_assert_eq!(status.code(), Code::Unauthenticated);
            }
        }
    }

    #[test]
    fn an_empty_token_list_admits_nobody() {
        let auth = Authenticator::new(&[]);
        assert!(auth.authenticate(Some(b"Bearer anything-at-all")).is_err());
    }

    #[test]
    fn the_interceptor_attaches_the_caller() {
        let mut auth = authenticator();
        let mut request = Request::new(());
        request.metadata_mut().insert(
            "authorization",
            "Bearer viewer-token-456789".parse().unwrap(),
        );
        let request = auth.call(request).unwrap();
        let caller = caller(&request).unwrap();
        assert_eq!(caller.role, Role::Viewer);
        assert_eq!(
            caller.require_command("SendCommand").unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            auth.call(Request::new(())).unwrap_err().code(),
            Code::Unauthenticated
        );
    }

    #[test]
    fn dev_token_is_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_dev_token(dir.path()).unwrap();
        assert_eq!(first.len(), 64);
        let second = load_or_create_dev_token(dir.path()).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(DEV_TOKEN_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        std::fs::write(dir.path().join(DEV_TOKEN_FILE), "short\n").unwrap();
        let replaced = load_or_create_dev_token(dir.path()).unwrap();
        assert_ne!(replaced, first);
        assert_eq!(replaced.len(), 64);
    }
}
