//! A real Confluent-compatible schema registry: rivven-schema, on a loopback port.

use std::process::Command;
use std::time::Duration;

use super::{ChildGuard, find_bin, free_port, wait_for};

/// A running schema registry.
pub struct Registry {
    _process: ChildGuard,
    port: u16,
}

impl Registry {
    /// Starts a registry on a free port and waits until `GET /subjects` answers.
    pub fn start(dir: &std::path::Path) -> Registry {
        let bin = find_bin(
            "RIVVEN_SCHEMA_BIN",
            "rivven-schema",
            "cargo install rivven-schema --version 0.0.22 --locked",
        );
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(dir)
            .env("RUST_LOG", "warn");
        let mut process = ChildGuard::spawn(
            "rivven-schema",
            cmd,
            dir.join(format!("registry-{port}.log")),
        );
        let url = format!("http://127.0.0.1:{port}/subjects");
        wait_for(
            "rivven-schema to answer GET /subjects",
            Duration::from_secs(30),
            || {
                process.assert_running();
                http_get_ok(&url).then_some(())
            },
        );
        Registry {
            _process: process,
            port,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Sets the compatibility `level` (`NONE`, `BACKWARD`, …) of `subject`, or the registry's
    /// default with `None`, and asserts the registry took it.
    pub async fn set_compatibility(&self, subject: Option<&str>, level: &str) {
        let path = subject.map_or_else(|| "config".to_string(), |s| format!("config/{s}"));
        let r = reqwest::Client::new()
            .put(format!("{}/{path}", self.url()))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(format!(r#"{{"compatibility":"{level}"}}"#))
            .send()
            .await
            .expect("registry config");
        assert!(
            r.status().is_success(),
            "compatibility {level} for {path}: {}",
            r.status()
        );
    }
}

/// A minimal blocking HTTP GET that reports whether the answer was 200.
fn http_get_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

/// An HTTP proxy in front of a registry that lets only requests with one `Authorization`
/// header through (as a registry with authentication, or an authenticating gateway before
/// one, answers): the others get 401 with the registry's error body. Counts both.
pub struct AuthProxy {
    port: u16,
    /// Requests forwarded / refused.
    pub counts: std::sync::Arc<(
        std::sync::atomic::AtomicUsize,
        std::sync::atomic::AtomicUsize,
    )>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl AuthProxy {
    /// Starts the proxy for `upstream` (a registry's base URL), expecting `authorization`.
    pub fn start(upstream: &str, authorization: &str) -> AuthProxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let counts = std::sync::Arc::new((
            std::sync::atomic::AtomicUsize::new(0),
            std::sync::atomic::AtomicUsize::new(0),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (upstream, expected, seen) = (
            upstream.to_string(),
            authorization.to_string(),
            std::sync::Arc::clone(&counts),
        );
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let client = reqwest::Client::new();
                let app = axum::Router::new().fallback(
                    move |method: axum::http::Method,
                          uri: axum::http::Uri,
                          headers: axum::http::HeaderMap,
                          body: axum::body::Bytes| {
                        let (client, upstream, expected, seen) = (
                            client.clone(),
                            upstream.clone(),
                            expected.clone(),
                            std::sync::Arc::clone(&seen),
                        );
                        async move {
                            let given = headers
                                .get(axum::http::header::AUTHORIZATION)
                                .and_then(|v| v.to_str().ok());
                            if given != Some(expected.as_str()) {
                                seen.1.fetch_add(1, Ordering::SeqCst);
                                return (
                                    axum::http::StatusCode::UNAUTHORIZED,
                                    r#"{"error_code":401,"message":"Unauthorized"}"#.to_string(),
                                );
                            }
                            seen.0.fetch_add(1, Ordering::SeqCst);
                            let path = uri.path_and_query().map_or("/", |p| p.as_str());
                            let mut req = client.request(method, format!("{upstream}{path}"));
                            if let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) {
                                req = req.header(axum::http::header::CONTENT_TYPE, ct);
                            }
                            match req.body(body).send().await {
                                Ok(r) => {
                                    let status =
                                        axum::http::StatusCode::from_u16(r.status().as_u16())
                                            .unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
                                    (status, r.text().await.unwrap_or_default())
                                }
                                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()),
                            }
                        }
                    },
                );
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("proxy serves");
            });
        });
        AuthProxy {
            port,
            counts,
            _stop: stop,
        }
    }

    /// Base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// (requests forwarded, requests refused) so far.
    pub fn seen(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering;
        (
            self.counts.0.load(Ordering::SeqCst),
            self.counts.1.load(Ordering::SeqCst),
        )
    }
}
