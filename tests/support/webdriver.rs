//! A real browser for the page tests: Debian's `chromedriver` driving headless `chromium`, spoken
//! to in the W3C WebDriver protocol (JSON over HTTP on loopback) with reqwest. Only what the tests
//! use: a session, navigation, finding elements by CSS, typing, clicking, the page source, the
//! current URL, screenshots. A missing chromedriver or chromium fails the test (never skips).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one headless chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

fn find_binary(candidates: &[&str], what: &str) -> String {
    candidates
        .iter()
        .find(|c| std::path::Path::new(c).exists())
        .map(|c| c.to_string())
        .unwrap_or_else(|| panic!("{what} is required for the browser tests (apt-get install chromium chromium-driver)"))
}

impl Browser {
    /// Start chromedriver on a free port and open a session with a phone-sized window.
    pub async fn start() -> Browser {
        let driver_bin = find_binary(
            &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"],
            "chromedriver",
        );
        let chromium = find_binary(
            &["/usr/bin/chromium", "/usr/lib/chromium/chromium"],
            "chromium",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(notify::net::client_config(None).expect("tls config"))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("http client");
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if let Ok(v) = r.json_value().await {
                    if v["value"]["ready"] == true {
                        ready = true;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start on {base}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--no-first-run", "--window-size=412,915"]
            }
        }}});
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            http,
        };
        let v = b.call("POST", "/session", Some(caps)).await;
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self
                .http
                .post(&url)
                .header("content-type", "application/json")
                .body(body.unwrap_or_else(|| json!({})).to_string()),
        };
        let resp = req.send().await.expect("webdriver request");
        let status = resp.status();
        let v = resp.json_value().await.expect("webdriver JSON");
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Open `url` and wait for the page to load.
    pub async fn go(&self, url: &str) {
        self.call("POST", &self.at("/url"), Some(json!({ "url": url })))
            .await;
    }

    /// The element matching the CSS `selector` (it must exist).
    pub async fn find(&self, selector: &str) -> String {
        let v = self
            .call(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {v}"))
            .to_string()
    }

    /// Type `text` into the element matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let id = self.find(selector).await;
        self.call(
            "POST",
            &self.at(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Click the element matching `selector` (a submit button submits its form).
    pub async fn click(&self, selector: &str) {
        let id = self.find(selector).await;
        self.call("POST", &self.at(&format!("/element/{id}/click")), None)
            .await;
    }

    /// The attribute `name` of the element matching `selector` (`None` when it has none).
    pub async fn attribute(&self, selector: &str, name: &str) -> Option<String> {
        let id = self.find(selector).await;
        self.call(
            "GET",
            &self.at(&format!("/element/{id}/attribute/{name}")),
            None,
        )
        .await
        .as_str()
        .map(String::from)
    }

    /// The current page's HTML.
    pub async fn source(&self) -> String {
        self.call("GET", &self.at("/source"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The current page's HTML once `ready` holds for it: a click that submits a form returns
    /// before the browser has loaded the answer, so a test waits for what it expects (at most
    /// 10 s; then the last page is returned and the test's own assertion says what is wrong).
    pub async fn source_when(&self, ready: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let page = self.source().await;
            if ready(&page) || std::time::Instant::now() > deadline {
                return page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// The current page's URL.
    pub async fn url(&self) -> String {
        self.call("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Save a screenshot of the current page as PNG into `target/browser/<name>.png` (test
    /// output for people to look at); returns its size in bytes.
    pub async fn screenshot(&self, name: &str) -> usize {
        let v = self.call("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("screenshot is base64");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
        std::fs::create_dir_all(&dir).expect("screenshot folder");
        std::fs::write(dir.join(format!("{name}.png")), &png).expect("write screenshot");
        png.len()
    }

    /// End the session and the driver.
    pub async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// `reqwest` without its `json` feature: read the body as JSON.
trait JsonValue {
    async fn json_value(self) -> Result<Value, String>;
}

impl JsonValue for reqwest::Response {
    async fn json_value(self) -> Result<Value, String> {
        let bytes = self.bytes().await.map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}
