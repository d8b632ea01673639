//! A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) over reqwest, driving
//! Debian's headless Chromium through `chromedriver`: enough for the console's browser tests
//! (navigate, find, type, click, read, run a script, screenshots, downloads).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// Where Debian installs them (packages `chromium` and `chromium-driver`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// See [`CHROMIUM`].
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process and one browser session.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    base: String,
    pub downloads: PathBuf,
    _profile: tempfile::TempDir,
    _downloads: tempfile::TempDir,
}

/// A found element.
#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// Start chromedriver on a free port and a headless Chromium session. Panics with what to
    /// install when Chromium or chromedriver is missing.
    pub async fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: the console's browser tests need Debian's chromium and \
                 chromium-driver (`apt-get install chromium chromium-driver`; .ci/run installs them)"
            );
        }
        let port = crate::helpers::free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .await
                .ok()
                .and_then(|r| r.status().is_success().then_some(()));
            if ready.is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "chromedriver did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let downloads = tempfile::tempdir().unwrap();
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // As root, on a machine with no network beyond loopback: no sandbox, no
                // background connections.
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {
                    "download.default_directory": downloads.path().display().to_string(),
                    "download.prompt_for_download": false,
                },
            },
        }}});
        let mut b = Browser {
            driver,
            http,
            base,
            downloads: downloads.path().to_owned(),
            _profile: profile,
            _downloads: downloads,
        };
        let v = b.raw("POST", "/session", caps).await;
        let id = v["sessionId"].as_str().expect("session id").to_owned();
        b.base = format!("{}/session/{id}", b.base);
        b
    }

    async fn raw(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body),
        };
        let res = req.send().await.expect("chromedriver answers");
        let status = res.status();
        let v: Value = res.json().await.expect("chromedriver JSON");
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {}",
            v["value"]
        );
        v["value"].clone()
    }

    async fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        self.raw(method, path, body).await
    }

    /// A POST whose failure (e.g. during a navigation) is None rather than a panic.
    async fn try_post(&self, path: &str, body: Value) -> Option<Value> {
        let res = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        let v: Value = res.json().await.ok()?;
        Some(v["value"].clone())
    }

    /// The first element found by `using`/`value`, waiting up to 10 s for it (a click that
    /// navigates may return before the next page is there).
    async fn wait_element(&self, using: &str, value: &str) -> Option<Element> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = self
                .try_post("/elements", json!({ "using": using, "value": value }))
                .await
                .and_then(|v| {
                    v.as_array()
                        .and_then(|a| a.first())
                        .and_then(|e| e[ELEMENT].as_str().map(|id| Element(id.to_owned())))
                });
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Open `url` and wait for the page to load.
    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", Value::Null)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first element matching a CSS selector, if one appears within 10 s.
    pub async fn try_find(&self, css: &str) -> Option<Element> {
        self.wait_element("css selector", css).await
    }

    /// The first element matching a CSS selector (panics when none appears within 10 s).
    pub async fn find(&self, css: &str) -> Element {
        match self.try_find(css).await {
            Some(e) => e,
            None => panic!(
                "no element {css} on {}:\n{}",
                self.url().await,
                self.try_text("body").await.unwrap_or_default()
            ),
        }
    }

    /// A link by its exact text (waits for it like [`Browser::find`]).
    pub async fn link(&self, text: &str) -> Element {
        match self.wait_element("link text", text).await {
            Some(e) => e,
            None => panic!(
                "no link {text:?} on {}:\n{}",
                self.url().await,
                self.try_text("body").await.unwrap_or_default()
            ),
        }
    }

    /// Type into an element.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{}/value", e.0),
            json!({ "text": text }),
        )
        .await;
    }

    /// Click an element (a link or a submit button: waits for the navigation).
    pub async fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({}))
            .await;
    }

    /// Click the first element matching `css`.
    pub async fn click_css(&self, css: &str) {
        let e = self.find(css).await;
        self.click(&e).await;
    }

    /// The visible text of the first element matching `css` (empty when none).
    pub async fn text(&self, css: &str) -> String {
        self.try_text(css).await.unwrap_or_default()
    }

    /// Run an async script (the last argument is the callback) and return its value.
    pub async fn run_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Run a script and return its value.
    pub async fn run(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// The text of the first element matching `css` now, read by a script; None while the
    /// page is changing (a navigation in progress) or when nothing matches.
    pub async fn try_text(&self, css: &str) -> Option<String> {
        let script =
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;";
        self.try_post("/execute/sync", json!({ "script": script, "args": [css] }))
            .await?
            .as_str()
            .map(str::to_owned)
    }

    /// Wait until the text of `css` contains `want` (after a click that navigates: the click
    /// may return before the next page is there); that text.
    pub async fn wait_for(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(t) = self.try_text(css).await {
                if t.contains(want) {
                    return t;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {want:?} on {}:\n{}",
                self.url().await,
                self.try_text("body").await.unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A cookie of the current page, `HttpOnly` ones included, as `name=value`.
    pub async fn cookie(&self, name: &str) -> String {
        let v = self
            .cmd("GET", &format!("/cookie/{name}"), Value::Null)
            .await;
        format!("{name}={}", v["value"].as_str().unwrap())
    }

    /// Resize the window (CSS pixels).
    pub async fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            json!({ "width": width, "height": height }),
        )
        .await;
    }

    /// Save a PNG screenshot of the viewport.
    pub async fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", "/screenshot", Value::Null).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Wait until a file whose name ends with `suffix` has fully downloaded into
    /// [`Browser::downloads`] (Chromium writes `*.crdownload` first, then renames it); its
    /// contents.
    pub async fn downloaded_with_suffix(&self, suffix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let done = std::fs::read_dir(&self.downloads)
                .into_iter()
                .flatten()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().ends_with(suffix));
            if let Some(e) = done {
                return std::fs::read_to_string(e.path()).unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "nothing ending {suffix} was downloaded; the folder holds {:?}",
                std::fs::read_dir(&self.downloads)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// End the session and chromedriver.
    pub async fn quit(mut self) {
        let _ = self.http.delete(&self.base).send().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
