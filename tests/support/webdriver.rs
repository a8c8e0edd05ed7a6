//! A real browser for the console's tests: Debian's `chromium`, driven headless through
//! `chromedriver` over the W3C WebDriver protocol (plain HTTP and JSON, spoken here with
//! reqwest). The driver and every browser process it started are killed by PID when the
//! `Browser` is dropped.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{ChildGuard, find_bin, free_port, wait_for};

/// The key W3C WebDriver names element references with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A headless Chromium session.
pub struct Browser {
    driver: Option<ChildGuard>,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium (1280×900) with a fresh profile in `dir`.
    pub async fn start(dir: &Path) -> Browser {
        let driver_bin = find_bin(
            "CHROMEDRIVER_BIN",
            "chromedriver",
            "apt-get install chromium chromium-driver",
        );
        let chromium = find_bin("CHROMIUM_BIN", "chromium", "apt-get install chromium");
        let port = free_port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1");
        let driver = ChildGuard::spawn("chromedriver", cmd, dir.join("chromedriver.log"));
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        wait_for("chromedriver to listen", Duration::from_secs(20), || {
            super::accepts(addr).then_some(())
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let base = format!("http://127.0.0.1:{port}");
        let profile = dir.join("chromium-profile");
        // Flags from this machine's notes: without the background-networking ones Chromium
        // keeps trying the closed network.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let mut browser = Browser {
            driver: Some(driver),
            base,
            session: String::new(),
            http,
        };
        let v = browser.post("/session", caps).await;
        browser.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        browser
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver POST {path}: {e}"));
        let v: Value = r.json().await.expect("WebDriver JSON");
        if v["value"]["error"].is_string() {
            panic!("WebDriver POST {path}: {}", v["value"]);
        }
        v.get("value").cloned().unwrap_or(v)
    }

    async fn get(&self, path: &str) -> Value {
        let v: Value = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("WebDriver GET {path}: {e}"))
            .json()
            .await
            .expect("WebDriver JSON");
        if v["value"]["error"].is_string() {
            panic!("WebDriver GET {path}: {}", v["value"]);
        }
        v["value"].clone()
    }

    fn at(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    /// Opens `url` and waits for it to load.
    pub async fn goto(&self, url: &str) {
        self.post(&self.at("/url"), json!({"url": url})).await;
    }

    /// The page's URL.
    pub async fn url(&self) -> String {
        self.get(&self.at("/url"))
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.get(&self.at("/source"))
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The visible text of the page's body.
    pub async fn text(&self) -> String {
        let body = self.find("body").await;
        self.get(&self.at(&format!("/element/{body}/text")))
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Waits (up to 20 s) until the page's URL contains `part`: a click on a link or a form's
    /// button may return before the next page is there.
    pub async fn wait_url(&self, part: &str) -> String {
        super::wait_for_async(
            &format!("the URL to contain {part}"),
            Duration::from_secs(20),
            || async {
                let url = self.url().await;
                url.contains(part).then_some(url)
            },
        )
        .await
    }

    /// The body's text, or `None` while the page is being replaced (a navigation, or a page
    /// that refreshes itself).
    async fn try_text(&self) -> Option<String> {
        let r = self
            .http
            .post(format!("{}{}", self.base, self.at("/element")))
            .json(&json!({"using": "css selector", "value": "body"}))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        let e = v["value"][ELEMENT].as_str()?.to_string();
        let v: Value = self
            .http
            .get(format!(
                "{}{}",
                self.base,
                self.at(&format!("/element/{e}/text"))
            ))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        v["value"].as_str().map(str::to_string)
    }

    /// Waits (up to `timeout`) until the page's text contains `what`; the text. Panics with
    /// the last text seen.
    pub async fn wait_text_for(&self, what: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        let mut last = String::new();
        loop {
            if let Some(text) = self.try_text().await {
                if text.contains(what) {
                    return text;
                }
                last = text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for the page to say {what:?}; it says:\n{last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Browser::wait_text_for`] for 20 s.
    pub async fn wait_text(&self, what: &str) -> String {
        self.wait_text_for(what, Duration::from_secs(20)).await
    }

    /// The first element matching the CSS `selector` (panics if there is none).
    pub async fn find(&self, selector: &str) -> String {
        let v = self
            .post(
                &self.at("/element"),
                json!({"using": "css selector", "value": selector}),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {v}"))
            .to_string()
    }

    /// Types `text` into the element matching `selector`.
    pub async fn type_into(&self, selector: &str, text: &str) {
        let e = self.find(selector).await;
        self.post(
            &self.at(&format!("/element/{e}/value")),
            json!({"text": text}),
        )
        .await;
    }

    /// Clicks the element matching `selector`.
    pub async fn click(&self, selector: &str) {
        let e = self.find(selector).await;
        self.post(&self.at(&format!("/element/{e}/click")), json!({}))
            .await;
    }

    /// Clicks the element matching `selector` (a link, a form's button) and waits (up to 20 s)
    /// until the page it was on is gone. WebDriver's click returns before the next page is
    /// there: text read at once may still be the old page's. Not for a page that refreshes
    /// itself (a running job's): its own refresh would pass for the click's navigation.
    pub async fn click_away(&self, selector: &str) {
        let old = self.find("html").await;
        self.click(selector).await;
        super::wait_for_async(
            "the page to be replaced",
            Duration::from_secs(20),
            || async { self.is_stale(&old).await.then_some(()) },
        )
        .await;
    }

    /// Whether the element `e` is no longer in the page (its document was replaced). A
    /// request that fails is not an answer: the caller asks again.
    async fn is_stale(&self, e: &str) -> bool {
        let Ok(r) = self
            .http
            .get(format!(
                "{}{}",
                self.base,
                self.at(&format!("/element/{e}/name"))
            ))
            .send()
            .await
        else {
            return false;
        };
        let Ok(v) = r.json::<Value>().await else {
            return false;
        };
        matches!(
            v["value"]["error"].as_str(),
            Some("stale element reference" | "no such element")
        )
    }

    /// Chooses the option `value` of the `<select>` matching `selector` (by keyboard, as a user
    /// without a mouse would).
    pub async fn choose(&self, selector: &str, value: &str) {
        let e = self.find(selector).await;
        self.post(
            &self.at(&format!("/element/{e}/value")),
            json!({"text": value}),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let v = self.get(&self.at("/screenshot")).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("PNG");
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Ends the session (closing the browser).
    pub async fn close(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        self.kill_all();
    }

    /// Kills the driver and every process below it, by PID.
    fn kill_all(&mut self) {
        let Some(driver) = self.driver.take() else {
            return;
        };
        let mut pids = vec![driver.pid()];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        for pid in pids.iter().skip(1) {
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
        }
        drop(driver);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let child: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // The parent is the second field after the command, which is in parentheses.
        let after = stat.rsplit_once(')')?.1;
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid).then_some(child)
    })
    .collect()
}
