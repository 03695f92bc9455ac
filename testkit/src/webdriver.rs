//! Headless Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`): a fresh profile, no background networking, torn down on drop.
//! [`Browser::start`] returns `None` when either is missing, after saying so loudly;
//! under `DOPPEL_REQUIRE_PEERS=1` it panics instead.

use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};

use crate::http::Client;
use crate::mosquitto::peers_required;

/// The key WebDriver names element references by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(25);

fn find_binary(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/usr/bin"),
            PathBuf::from("/usr/lib/chromium"),
        ])
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A browser session.
pub struct Browser {
    driver: Child,
    client: Client,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session under it.
    pub async fn start(test: &str) -> Option<Browser> {
        let (Some(chromium), Some(chromedriver)) = (
            find_binary(&["chromium", "chromium-browser"]),
            find_binary(&["chromedriver"]),
        ) else {
            let message = format!(
                "{test}: chromium and chromedriver are not installed (Debian: chromium chromium-driver)"
            );
            assert!(!peers_required(), "{message}");
            eprintln!("SKIPPED {message}");
            return None;
        };
        let port = crate::net::free_tcp_port();
        let profile = tempfile::tempdir().expect("a profile directory");
        // Its own process group, so the browser it starts goes with it even when a
        // test fails half-way; its temporary files in the profile directory.
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .env("TMPDIR", profile.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        assert!(
            crate::net::wait_listening(port, Duration::from_secs(20)),
            "chromedriver did not listen"
        );
        let client = Client::new(&format!("http://127.0.0.1:{port}"), None);
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:loggingPrefs": { "browser": "ALL" },
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new",
                        "--no-sandbox",
                        "--disable-gpu",
                        "--disable-dev-shm-usage",
                        "--disable-background-networking",
                        "--disable-component-update",
                        "--disable-sync",
                        "--disable-extensions",
                        "--no-first-run",
                        "--no-default-browser-check",
                        "--window-size=1400,1000",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }},
        });
        let mut browser = Browser {
            driver,
            client,
            session: String::new(),
            _profile: profile,
        };
        let answer = browser.call("POST", "/session", Some(capabilities)).await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_string();
        Some(browser)
    }

    /// One WebDriver command; panics on an error answer.
    async fn call(&self, method: &str, path: &str, body: Option<Json>) -> Json {
        match self.try_call(method, path, body).await {
            Ok(value) => value,
            Err(error) => panic!("WebDriver {method} {path}: {error}"),
        }
    }

    /// One WebDriver command; the error's JSON on an error answer.
    async fn try_call(&self, method: &str, path: &str, body: Option<Json>) -> Result<Json, Json> {
        let body = body.map(|b| b.to_string());
        let answer = self
            .client
            .send(
                method,
                path,
                &[("content-type", "application/json")],
                body.as_deref().map(str::as_bytes),
            )
            .await
            .map_err(|error| json!({ "error": error.to_string() }))?;
        let json = answer.json();
        if answer.status == 200 {
            Ok(json["value"].clone())
        } else {
            Err(json["value"].clone())
        }
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// The page's URL now.
    pub async fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The elements matching a CSS selector now.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .try_call(
                "POST",
                &self.at("/elements"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .unwrap_or(Json::Array(Vec::new()));
        elements(self, &found)
    }

    /// Whether an element matches `css` now.
    pub async fn exists(&self, css: &str) -> bool {
        !self.find_all(css).await.is_empty()
    }

    /// The first element matching `css`, waiting up to `timeout` for one.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element<'_> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next() {
                return element;
            }
            if Instant::now() > deadline {
                panic!(
                    "no element `{css}` after {timeout:?}; the page shows:\n{}",
                    self.page_text().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the text of the first element matching `css` satisfies `check`,
    /// and returns that text.
    pub async fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(element) = self.find_all(css).await.into_iter().next()
                && let Some(text) = element.try_text().await
            {
                if check(&text) {
                    return text;
                }
                last = text;
            }
            if Instant::now() > deadline {
                panic!("`{css}` never showed the expected text after {timeout:?}; last: {last:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no element matches `css`.
    pub async fn wait_gone(&self, css: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.exists(css).await {
            assert!(
                Instant::now() < deadline,
                "`{css}` still shown after {timeout:?}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Json) -> Json {
        self.call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// The page's visible text.
    pub async fn page_text(&self) -> String {
        self.try_call(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({ "script": "return document.body ? document.body.innerText : ''", "args": [] })),
        )
        .await
        .ok()
        .and_then(|value| value.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    /// The browser's console messages since the last call (errors, CSP violations).
    pub async fn console_messages(&self) -> Vec<String> {
        self.try_call(
            "POST",
            &self.at("/se/log"),
            Some(json!({ "type": "browser" })),
        )
        .await
        .ok()
        .and_then(|value| value.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            format!(
                "{} {}",
                entry["level"].as_str().unwrap_or_default(),
                entry["message"].as_str().unwrap_or_default()
            )
        })
        .collect()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.call("GET", &self.at("/screenshot"), None).await;
        decode_base64(encoded.as_str().unwrap_or_default())
    }

    /// Ends the session, then the driver and the browser (dropping does the latter).
    pub async fn quit(self) {
        let _ = self.try_call("DELETE", &self.at(""), None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver's whole process group: the driver and every browser process.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .status();
        let _ = self.driver.wait();
    }
}

/// An element of the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Element<'_> {
    fn at(&self, rest: &str) -> String {
        self.browser.at(&format!("/element/{}{rest}", self.id))
    }

    /// Clicks it.
    pub async fn click(&self) {
        self.browser
            .call("POST", &self.at("/click"), Some(json!({})))
            .await;
    }

    /// Clears it and types `text`.
    pub async fn type_text(&self, text: &str) {
        self.browser
            .call("POST", &self.at("/clear"), Some(json!({})))
            .await;
        self.browser
            .call("POST", &self.at("/value"), Some(json!({ "text": text })))
            .await;
    }

    /// Its rendered text.
    pub async fn text(&self) -> String {
        self.try_text().await.unwrap_or_default()
    }

    async fn try_text(&self) -> Option<String> {
        self.browser
            .try_call("GET", &self.at("/text"), None)
            .await
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
    }

    /// An attribute's value.
    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .try_call("GET", &self.at(&format!("/attribute/{name}")), None)
            .await
            .ok()
            .and_then(|value| value.as_str().map(str::to_string))
    }

    /// Elements inside it matching `css`.
    pub async fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let found = self
            .browser
            .try_call(
                "POST",
                &self.at("/elements"),
                Some(json!({ "using": "css selector", "value": css })),
            )
            .await
            .unwrap_or(Json::Array(Vec::new()));
        elements(self.browser, &found)
    }

    /// Its reference, to pass to [`Browser::execute`].
    pub fn reference(&self) -> Json {
        json!({ ELEMENT: self.id })
    }
}

/// The elements a find answered with.
fn elements<'a>(browser: &'a Browser, found: &Json) -> Vec<Element<'a>> {
    found
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item[ELEMENT].as_str())
                .map(|id| Element {
                    browser,
                    id: id.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Standard base64 without line breaks, as WebDriver sends screenshots.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.bytes().filter_map(value) {
        buffer = (buffer << 6) | c;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8gd29ybGQ="), b"hello world");
    }
}
