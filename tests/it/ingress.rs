//! Hostile and careless senders against the webhook port: slow bodies are cut at
//! `body_timeout` (408) while signed requests on other connections are answered, memory stays
//! bounded; a flood of forgeries never makes a real signed delivery get 429; a declared body
//! past `max_body_size` is refused before it is sent (413).

use std::time::{Duration, Instant};

use switchyard::config::Config;
use switchyard::source::webhook::verify::sign;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::consume::read_topic;
use crate::support::{Stack, daemon, wait_for_async};

const SECRET: &str = "gh-ingress-secret";
const PATH: &str = "/webhooks/gh";

/// A configuration with one GitHub source at [`PATH`] routed to `topic`.
fn config_text(listen: &str, stack: &Stack, topic: &str, server: &str, source: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
{server}

[kafka]
bootstrap_servers = "{bootstrap}"
delivery_timeout = "5s"

[schema_registry]
url = "{registry}"

[sources.gh]
type = "webhook"
path = "{PATH}"
provider = "github"
secrets = ["{SECRET}"]
{source}

[[routes]]
name = "gh-to-kafka"
source = "gh"
topic = "{topic}"
"#,
        bootstrap = stack.broker.bootstrap(),
        registry = stack.registry.url(),
    )
}

fn load(stack: &Stack, text: &str) -> Config {
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(&path, text).expect("write config");
    Config::load(&path).unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{text}"))
}

/// Sends GitHub delivery `n`, signed with `secret`; its status.
async fn send(client: &reqwest::Client, url: &str, n: usize, secret: &str) -> u16 {
    let body = format!(r#"{{"action":"opened","number":{n}}}"#);
    client
        .post(format!("{url}{PATH}"))
        .header("content-type", "application/json")
        .header("x-github-delivery", format!("delivery-{n}"))
        .header("x-github-event", "pull_request")
        .header("x-hub-signature-256", sign::github(secret, body.as_bytes()))
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Reads one HTTP response from `stream` (head and a `Content-Length` body, or up to EOF):
/// status and text.
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> Option<(u16, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.ok()?;
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if n == 0 || buf.len() >= end + 4 + length {
                let status = text.split(' ').nth(1)?.parse().ok()?;
                return Some((status, text));
            }
        } else if n == 0 {
            return None;
        }
    }
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_are_cut_at_the_deadline_while_signed_requests_are_answered() {
    let stack = Stack::start();
    let port = crate::support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let text = config_text(
        &format!("127.0.0.1:{port}"),
        &stack,
        "gh-slow",
        "body_timeout = \"2s\"",
        "",
    );
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(&path, &text).expect("write config");
    let mut sy = daemon::spawn_binary(&path, stack.dir.path().join("switchyard.log"));
    let client = daemon::client(Duration::from_secs(10));
    daemon::wait_ready(&client, &url).await;
    let pid = sy.pid();
    let rss_before = rss_kib(pid);

    // 200 connections, each declaring a 100 kB body and sending it a byte a second.
    let slow = 200usize;
    let deadline = Duration::from_secs(2);
    let senders: Vec<_> = (0..slow)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(("127.0.0.1", port))
                    .await
                    .expect("connect");
                let (mut read, mut write) = stream.into_split();
                let head = format!(
                    "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                     x-github-event: push\r\nx-github-delivery: slow\r\n\
                     x-hub-signature-256: sha256=00\r\ncontent-length: 100000\r\n\r\n"
                );
                write.write_all(head.as_bytes()).await.expect("send head");
                let started = Instant::now();
                let dribble = tokio::spawn(async move {
                    // Stops when the server closes the connection (or after 30 bytes).
                    for _ in 0..30 {
                        if write.write_all(b"{").await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
                let answer =
                    tokio::time::timeout(Duration::from_secs(20), read_response(&mut read))
                        .await
                        .ok()
                        .flatten();
                dribble.abort();
                (answer, started.elapsed())
            })
        })
        .collect();

    // Meanwhile: signed deliveries on their own connections, and the daemon's memory.
    let mut peak = rss_before;
    let mut signed = Vec::new();
    for n in 0..20 {
        let t = Instant::now();
        signed.push((send(&client, &url, n, SECRET).await, t.elapsed()));
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    for s in senders {
        answers.push(s.await.expect("slow sender task"));
        peak = peak.max(rss_kib(pid));
    }
    sy.assert_running();

    for (n, (status, took)) in signed.iter().enumerate() {
        assert_eq!(
            *status, 200,
            "signed delivery {n} during the slow senders: {status} after {took:?}"
        );
    }
    let mut slowest = Duration::ZERO;
    for (i, (answer, took)) in answers.iter().enumerate() {
        let Some((status, text)) = answer else {
            panic!("slow sender {i} got no answer within 20 s (after {took:?})");
        };
        assert_eq!(*status, 408, "slow sender {i}: {text}");
        assert!(text.contains("\"error\":\"body_timeout\""), "{text}");
        slowest = slowest.max(*took);
    }
    assert!(
        slowest <= deadline + Duration::from_secs(3),
        "a slow body was answered {slowest:?} after its head (body_timeout 2s)"
    );
    eprintln!(
        "slowloris: {slow} slow connections answered 408 within {slowest:?}; RSS {} MiB before, peak {} MiB",
        rss_before / 1024,
        peak / 1024
    );
    assert!(
        peak < 256 * 1024,
        "the daemon's RSS reached {} MiB with {slow} slow senders",
        peak / 1024
    );
    let metrics = daemon::metrics(&url).await;
    assert!(
        metrics.contains(
            r#"switchyard_webhook_rejected_total{reason="body_timeout",source="gh"} 200"#
        ),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(sy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forgeries_never_makes_signed_deliveries_wait() {
    let stack = Stack::start();
    let text = config_text(
        "127.0.0.1:0",
        &stack,
        "gh-flood",
        "",
        "rate_limit = \"20/s\"",
    );
    let (sy, url) = daemon::start(load(&stack, &text)).await;
    let client = daemon::client(Duration::from_secs(10));

    // Forgeries from 8 concurrent senders for as long as the real deliveries take.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|k| {
            let client = client.clone();
            let url = url.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 100_000 + k * 100_000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(send(&client, &url, n, "not-the-secret").await);
                    n += 1;
                }
                statuses
            })
        })
        .collect();
    // 40 real deliveries, 10 a second: half the source's rate limit.
    let real = 40usize;
    let started = Instant::now();
    let mut real_statuses = Vec::new();
    for n in 0..real {
        real_statuses.push(send(&client, &url, n, SECRET).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut forged = Vec::new();
    for f in flood {
        forged.extend(f.await.expect("flood task"));
    }
    let per_sec = forged.len() as f64 / took.as_secs_f64();
    let refused_429 = forged.iter().filter(|s| **s == 429).count();
    eprintln!(
        "forgeries: {} in {took:?} ({per_sec:.0}/s; 401: {}, 429: {refused_429})",
        forged.len(),
        forged.iter().filter(|s| **s == 401).count()
    );
    assert!(
        per_sec > 100.0,
        "the flood ({per_sec:.0}/s) should be well above the 20/s rate limit"
    );
    assert!(
        forged.iter().all(|s| *s == 401 || *s == 429),
        "forgeries answered other than 401/429: {:?}",
        forged
            .iter()
            .filter(|s| **s != 401 && **s != 429)
            .take(10)
            .collect::<Vec<_>>()
    );
    assert!(
        refused_429 > 0,
        "a sender past its failure budget is answered 429"
    );
    let not_ok: Vec<_> = real_statuses
        .iter()
        .enumerate()
        .filter(|(_, s)| **s != 200)
        .collect();
    assert!(
        not_ok.is_empty(),
        "signed deliveries not answered 200 during the flood: {not_ok:?}"
    );
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "gh-flood", real, Duration::from_secs(30))
    })
    .await
    .expect("consumer thread");
    assert_eq!(records.len(), real, "one record per signed delivery");
    let metrics = daemon::metrics(&url).await;
    for reason in ["mismatch", "failure_budget"] {
        assert!(
            metrics.contains(&format!(
                r#"switchyard_webhook_rejected_total{{reason="{reason}",source="gh"}}"#
            )),
            "forgeries counted with reason {reason}"
        );
    }
    assert!(
        !metrics.contains(r#"reason="rate_limited",source="gh""#),
        "the forgeries did not spend the source's rate limit"
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_past_max_body_size_is_refused_before_it_is_sent() {
    let stack = Stack::start();
    let text = config_text(
        "127.0.0.1:0",
        &stack,
        "gh-large",
        "",
        "max_body_size = \"1KiB\"",
    );
    let (sy, url) = daemon::start(load(&stack, &text)).await;
    let addr = url.trim_start_matches("http://").to_string();

    // With and without `Expect: 100-continue`: the answer comes before any body byte is sent,
    // and no `100 Continue` invites it.
    for expect in ["", "expect: 100-continue\r\n"] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        let head = format!(
            "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n{expect}\
             content-length: 10000000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        let started = Instant::now();
        let (status, text) =
            tokio::time::timeout(Duration::from_secs(3), read_response(&mut stream))
                .await
                .expect("answered without the body")
                .expect("a response");
        assert_eq!(status, 413, "{expect:?}: {text}");
        assert!(text.contains("\"error\":\"payload_too_large\""), "{text}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    // A chunked body (no length declared) is cut once it passes the limit.
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    let chunk = format!("200\r\n{}\r\n", " ".repeat(512));
    for _ in 0..3 {
        stream
            .write_all(chunk.as_bytes())
            .await
            .expect("send chunk");
    }
    let (status, text) = tokio::time::timeout(Duration::from_secs(3), read_response(&mut stream))
        .await
        .expect("answered once past the limit")
        .expect("a response");
    assert_eq!(status, 413, "{text}");

    let metrics = daemon::metrics(&url).await;
    assert!(
        metrics.contains(r#"switchyard_webhook_rejected_total{reason="too_large",source="gh"} 3"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("rejected"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    daemon::stop(sy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_max_buffered_bytes_are_answered_503_until_memory_frees() {
    let stack = Stack::start();
    let text = config_text(
        "127.0.0.1:0",
        &stack,
        "gh-buffered",
        "max_buffered_bytes = \"64KiB\"\nbody_timeout = \"3s\"",
        "max_body_size = \"60KiB\"",
    );
    let (sy, url) = daemon::start(load(&stack, &text)).await;
    let addr = url.trim_start_matches("http://").to_string();

    // One sender holds 50 kB of the 64 KiB (declared, not yet sent).
    let mut holder = TcpStream::connect(&addr).await.expect("connect");
    holder
        .write_all(
            format!(
                "POST {PATH} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: 50000\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .expect("send head");
    // A second 50 kB body does not fit beside it: 503 with Retry-After.
    let client = daemon::client(Duration::from_secs(10));
    let refused = wait_for_async(
        "a body past the buffer budget to be refused",
        Duration::from_secs(5),
        || {
            let client = client.clone();
            let url = url.clone();
            async move {
                let r = client
                    .post(format!("{url}{PATH}"))
                    .header("content-type", "application/json")
                    .body(vec![b' '; 50_000])
                    .send()
                    .await
                    .ok()?;
                (r.status() == 503).then_some(r)
            }
        },
    )
    .await;
    assert!(refused.headers().contains_key("retry-after"));
    let body = refused.text().await.expect("body");
    assert!(body.contains("\"error\":\"overloaded\""), "{body}");

    // Once the holder is answered (408 at its deadline), a signed delivery of the same size fits.
    let (status, _) = tokio::time::timeout(Duration::from_secs(10), read_response(&mut holder))
        .await
        .expect("the holder is answered")
        .expect("a response");
    assert_eq!(status, 408);
    let padding = " ".repeat(49_000);
    let signed = format!(r#"{{"action":"opened","number":1,"pad":"{padding}"}}"#);
    let r = client
        .post(format!("{url}{PATH}"))
        .header("content-type", "application/json")
        .header("x-github-delivery", "big-1")
        .header("x-github-event", "pull_request")
        .header(
            "x-hub-signature-256",
            sign::github(SECRET, signed.as_bytes()),
        )
        .body(signed)
        .send()
        .await
        .expect("answered");
    assert_eq!(r.status(), 200);
    daemon::stop(sy).await;
}

#[test]
fn ingress_bounds_that_cannot_work_are_config_errors_at_their_line() {
    let dir = crate::support::scratch();
    let path = dir.path().join("routes.toml");
    let rest = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"

[schema_registry]
url = "http://127.0.0.1:9"

[sources.gh]
type = "webhook"
path = "/webhooks/gh"
provider = "github"
secrets = ["s"]
max_body_size = "2KiB"

[[routes]]
name = "r"
source = "gh"
topic = "t"
"#;
    for (server, line, what) in [
        ("body_timeout = \"soon\"", 2, "invalid duration \"soon\""),
        (
            "max_connections = 0",
            2,
            "max_connections must be between 1 and 1000000",
        ),
        (
            "max_buffered_bytes = \"1KiB\"",
            2,
            "max_buffered_bytes (1024 bytes) is smaller than the max_body_size of source `gh` (2048 bytes)",
        ),
    ] {
        std::fs::write(&path, format!("[server]\n{server}\n{rest}")).expect("write config");
        let errors = match Config::load(&path) {
            Ok(_) => panic!("`{server}` loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            errors.contains(&format!("routes.toml:{line}:")) && errors.contains(what),
            "expected `{what}` at line {line}:\n{errors}"
        );
    }
    // Left out, the buffer budget holds at least one body of the largest max_body_size.
    std::fs::write(
        &path,
        format!("[server]\n{}", rest.replace("\"2KiB\"", "\"100MiB\"")),
    )
    .expect("write config");
    let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.max_buffered_bytes, 100 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_wait_for_a_place_and_oversized_heads_get_431() {
    let stack = Stack::start();
    let text = config_text(
        "127.0.0.1:0",
        &stack,
        "gh-cap",
        "max_connections = 4\nbody_timeout = \"2s\"",
        "",
    );
    let (sy, url) = daemon::start(load(&stack, &text)).await;
    let addr = url.trim_start_matches("http://").to_string();
    let metrics_url = url.clone();
    let closed = |reason: &'static str| {
        let url = metrics_url.clone();
        async move {
            let metrics = daemon::metrics(&url).await;
            metrics
                .lines()
                .find(|l| {
                    l.starts_with("switchyard_http_connections_closed_total")
                        && l.contains(&format!("reason=\"{reason}\""))
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        }
    };
    // Warm (schema registered, producer connected) on a client of its own, dropped after, so
    // that the wait measured below is for a place and not for a first delivery.
    {
        let warm = daemon::client(Duration::from_secs(30));
        let body = r#"{"action":"opened","number":0}"#;
        let answer: serde_json::Value = warm
            .post(format!("{url}{PATH}"))
            .header("content-type", "application/json")
            .header("x-github-delivery", "delivery-0")
            .header("x-github-event", "pull_request")
            .header("x-hub-signature-256", sign::github(SECRET, body.as_bytes()))
            .body(body)
            .send()
            .await
            .expect("a first delivery")
            .json()
            .await
            .expect("a JSON answer");
        assert_eq!(answer["status"], "accepted", "a first delivery: {answer}");
    }
    let (too_large_before, timeouts_before) =
        (closed("head_too_large").await, closed("head_timeout").await);

    // A head past 32 KiB is refused (on a connection of its own, closed after).
    let mut big = TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\ncontent-length: 0\r\n\r\n",
        "a".repeat(40 << 10)
    );
    let _ = big.write_all(head.as_bytes()).await;
    let (status, text) = tokio::time::timeout(Duration::from_secs(3), read_response(&mut big))
        .await
        .expect("answered")
        .expect("a response");
    assert_eq!(status, 431, "{text}");
    drop(big);

    // Four connections that send nothing hold every place, until body_timeout closes them.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // The fifth is behind them in the listen queue, which the acceptor takes in order.
    let client = daemon::client(Duration::from_secs(10));
    let held_since = Instant::now();
    let status = send(&client, &url, 1, SECRET).await;
    let waited = held_since.elapsed();
    assert_eq!(
        status, 200,
        "the fifth connection is served once a place frees"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(6),
        "the fifth request waited {waited:?} (the idle ones are closed 2 s after they opened)"
    );
    // The idle connections were closed by the server.
    for mut c in idle {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(1), c.read(&mut buf))
            .await
            .expect("closed by the server");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    // Both kinds are counted (metrics are per process: other tests may add to them).
    assert!(
        closed("head_too_large").await > too_large_before,
        "the 431 is counted"
    );
    assert!(
        closed("head_timeout").await >= timeouts_before + 4,
        "the four idle connections closed at body_timeout are counted"
    );
    daemon::stop(sy).await;
}
