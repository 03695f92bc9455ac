//! A small HTTP/1.1 client over hyper for tests of the REST API and for driving a
//! browser through WebDriver: one connection per request, plain or TLS with a given
//! root certificate, and a reader of server-sent events.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// How long connecting and the response head may take.
const CONNECT: Duration = Duration::from_secs(10);

/// An answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; panics with the body's text when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value as text; empty when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }
}

/// A client for one server: its base URL (`http://127.0.0.1:8080`), optional TLS
/// roots and a bearer token sent with every request.
#[derive(Clone)]
pub struct Client {
    host: String,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl Client {
    /// A client for `base` (`http://host:port` or `https://host:port`); for https,
    /// `root_pem` is the certificate authority to trust.
    pub fn new(base: &str, root_pem: Option<&str>) -> Self {
        let (scheme, rest) = base.split_once("://").expect("a URL with a scheme");
        let authority = rest.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').expect("a URL with a port");
        let tls = (scheme == "https").then(|| {
            let mut roots = rustls::RootCertStore::empty();
            let pem = root_pem.expect("https needs a root certificate");
            use rustls_pki_types::pem::PemObject;
            for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(certificate.expect("a PEM certificate"))
                    .expect("a CA");
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        });
        Self {
            host: host.to_string(),
            port: port.parse().expect("a port number"),
            tls,
            token: None,
        }
    }

    /// The same client sending `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// The same client without a token.
    pub fn without_token(&self) -> Self {
        Self {
            token: None,
            ..self.clone()
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &[], None).await.expect("GET")
    }

    /// POST `path` with a JSON body.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Answer {
        let body = body.to_string();
        self.send(
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .await
        .expect("POST")
    }

    /// Sends a request and reads the whole answer.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<Answer> {
        let response = self.start(method, path, headers, body).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes()
            .to_vec();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// GET `path` as a stream of server-sent events.
    pub async fn events(&self, path: &str) -> io::Result<Events> {
        let response = self
            .start("GET", path, &[("accept", "text/event-stream")], None)
            .await?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(io::Error::other)?
                .to_bytes();
            return Err(io::Error::other(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(Events {
            body: response.into_body(),
            buffer: String::new(),
        })
    }

    async fn start(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<hyper::Response<Incoming>> {
        let tcp =
            tokio::time::timeout(CONNECT, TcpStream::connect((self.host.as_str(), self.port)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
            .map_err(io::Error::other)?;
        match &self.tls {
            None => exchange(tcp, request).await,
            Some(config) => {
                let name = rustls_pki_types::ServerName::try_from(self.host.clone())
                    .map_err(io::Error::other)?;
                let stream = tokio_rustls::TlsConnector::from(config.clone())
                    .connect(name, tcp)
                    .await?;
                exchange(stream, request).await
            }
        }
    }
}

async fn exchange<S>(
    stream: S,
    request: hyper::Request<Full<Bytes>>,
) -> io::Result<hyper::Response<Incoming>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    tokio::time::timeout(CONNECT, sender.send_request(request))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response head"))?
        .map_err(io::Error::other)
}

/// Server-sent events as they arrive.
pub struct Events {
    body: Incoming,
    buffer: String,
}

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Its name (`message` when the server gave none).
    pub name: String,
    /// Its data lines, joined with newlines.
    pub data: String,
}

impl Event {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|error| panic!("event data is not JSON ({error}): {}", self.data))
    }
}

impl Events {
    /// The next event; `None` when the stream ended. Comments are skipped.
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data: Vec<&str> = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        name = value.trim_start().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value));
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(Event {
                    name,
                    data: data.join("\n"),
                });
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(bytes) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
    }
}

/// Percent-encodes a path segment (an asset path or alarm code) as
/// `encodeURIComponent` does.
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'~'
            | b'*'
            | b'\''
            | b'('
            | b')' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}
