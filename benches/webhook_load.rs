//! HTTP/1.1 load generator for the webhook ingest benchmark (benches/webhooks.sh).
//!
//! N connections (default 64), each one a task that sends a POST, waits for the whole answer,
//! and sends the next, on keep-alive connections, like `wrk -c64` (closed loop: throughput).
//! With `--rate R` it is open loop instead, like wrk2 (latency): each connection sends its
//! requests on a fixed schedule (R/N per second, connections staggered), and a request whose
//! connection was still busy at its scheduled time counts its latency from that time, so a slow
//! answer is not hidden by the requests it delayed (coordinated omission); a request sent late
//! only by the generator's own timer counts from when it was sent. Every request carries a
//! distinct ~1 KiB Stripe-style event (its own `"id"`, so switchyard's deduplication sees a new
//! event each time) signed with a `Stripe-Signature` header (`t=<unix>,v1=HMAC-SHA256(secret,
//! "<t>.<body>")`). The same requests go to nginx and to switchyard, so the generator's own cost
//! is the same on both sides of the ratio.
//!
//! Signing is cheap on purpose: the event id is the body's last field, so the HMAC state after
//! the fixed prefix `"<t>.<body up to the id>"` is computed once and cloned per request (a few
//! SHA-256 blocks instead of ~18). The first request is checked against the crate's
//! `sign::stripe`. `t` is taken once at start (a run lasts seconds; the source's tolerance is 1 h).
//!
//! Requests completing before `--warmup` seconds are not counted; then requests completing in
//! the next `--duration` seconds are (throughput, latency percentiles, statuses). At the two
//! instants the window opens and closes, it samples utime+stime of the `--cpu-pid` processes,
//! its own CPU, the machine's busy and steal time, and load1. One JSON line goes to stdout, a
//! summary to stderr.
//!
//! ```text
//! webhook_load --url http://127.0.0.1:8080/webhooks/stripe --duration 10 --warmup 3 \
//!     --connections 64 --threads 2 --secret whsec_bench --cpu-pid server=1234
//! ```

#[path = "common/measure.rs"]
mod measure;

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use hmac::{Hmac, Mac};
use measure::{clk_tck, percentile, sample};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(about = "Closed-loop load of signed Stripe-style webhooks")]
struct Args {
    /// Target, http://HOST:PORT/PATH (plain HTTP/1.1 only).
    #[arg(long)]
    url: String,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Concurrent connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Generator threads, each an event loop with its share of the connections (wrk -t).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Stripe endpoint secret.
    #[arg(long, default_value = "whsec_bench")]
    secret: String,
    /// Exact body size in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Prefix of the event ids (default: from the clock), so runs never share an id.
    #[arg(long)]
    run_id: Option<String>,
    /// NAME=PID: CPU (utime+stime, all threads) of that process over the window is reported
    /// under NAME; repeat a NAME to add processes up.
    #[arg(long = "cpu-pid")]
    cpu_pids: Vec<String>,
    /// Open loop: requests per second in all, on a fixed schedule (0: closed loop). Give
    /// enough connections for the rate times the latency (in flight at once).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Also write every measured request as `<ms since the window opened> <latency µs>` lines
    /// to this file (where in the run the slow answers were).
    #[arg(long)]
    timeline: Option<std::path::PathBuf>,
    /// Ignored (`cargo bench` passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

type HmacSha256 = Hmac<Sha256>;

/// The fixed parts of every request; per request only the id and signature change.
struct Template {
    /// `POST … HTTP/1.1` … up to and including `Stripe-Signature: t=<t>,v1=`.
    head_before_sig: Vec<u8>,
    /// `\r\n` after the signature to the empty line.
    head_after_sig: Vec<u8>,
    /// The body up to the id's value (inclusive of its opening quote).
    body_prefix: Vec<u8>,
    /// After the id: `"}`.
    body_suffix: &'static [u8],
    /// HMAC state after `"<t>."` + body_prefix.
    mac: HmacSha256,
    t: i64,
    run_id: String,
}

/// Width of the per-request part of the id: 2 hex digits of connection + `_` + 10 digits.
const ID_TAIL: usize = 2 + 1 + 10;

impl Template {
    fn new(
        host: &str,
        path: &str,
        secret: &str,
        body_bytes: usize,
        run_id: String,
        t: i64,
    ) -> Template {
        // A payment_intent.succeeded event as Stripe sends it (fields trimmed), padded with
        // metadata to the exact size; the id comes last so it can change without rehashing.
        let mut prefix = format!(
            concat!(
                r#"{{"object":"event","api_version":"2024-06-20","created":{t},"#,
                r#""type":"payment_intent.succeeded","livemode":false,"pending_webhooks":1,"#,
                r#""request":{{"id":"req_8fJxQ2bench","idempotency_key":"2f6c1c0e-bench"}},"#,
                r#""data":{{"object":{{"id":"pi_3PbenchA1b2C3d4","object":"payment_intent","#,
                r#""amount":2000,"amount_received":2000,"capture_method":"automatic","#,
                r#""confirmation_method":"automatic","currency":"usd","#,
                r#""customer":"cus_Qbench12345678","description":"Order 1001","#,
                r#""latest_charge":"ch_3PbenchA1b2C3d4","payment_method":"pm_1PbenchZ9y8X7w6","#,
                r#""payment_method_types":["card"],"receipt_email":"jane@example.com","#,
                r#""status":"succeeded","created":{t},"metadata":{{"#
            ),
            t = t
        );
        // After the metadata entries: the note (filled to the exact size), then the closing
        // braces of metadata, the payment_intent and data, then the id, last.
        const CLOSING: &str = r#""note":""}}},"id":""#;
        let closing_len = CLOSING.len() + run_id.len() + 1 + ID_TAIL + 2;
        for i in 0..100 {
            let entry = format!(r#""line_{i:02}":"sku-{:08}","#, 10_000_000 + i * 7919);
            if prefix.len() + entry.len() + closing_len > body_bytes {
                break;
            }
            prefix.push_str(&entry);
        }
        let used = prefix.len() + closing_len;
        assert!(
            used <= body_bytes,
            "--body-bytes {body_bytes} is too small (at least {used})"
        );
        let note = "x".repeat(body_bytes - used);
        prefix.push_str(&format!(r#""note":"{note}"}}}}}},"id":""#));
        prefix.push_str(&run_id);
        prefix.push('_');
        let body_prefix = prefix.into_bytes();

        let head_before_sig = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n\
             Accept: */*; q=0.5, application/xml\r\nCache-Control: no-cache\r\n\
             Content-Type: application/json; charset=utf-8\r\nContent-Length: {body_bytes}\r\n\
             Stripe-Signature: t={t},v1="
        )
        .into_bytes();
        let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("any key size");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(&body_prefix);
        Template {
            head_before_sig,
            head_after_sig: b"\r\n\r\n".to_vec(),
            body_prefix,
            body_suffix: b"\"}",
            mac,
            t,
            run_id,
        }
    }

    /// Writes request number `seq` of connection `conn` into `out`.
    fn request(&self, conn: usize, seq: u64, out: &mut Vec<u8>) {
        let tail = format!("{:02x}_{:010}", conn & 0xff, seq % 10_000_000_000);
        debug_assert_eq!(tail.len(), ID_TAIL);
        let mut mac = self.mac.clone();
        mac.update(tail.as_bytes());
        mac.update(self.body_suffix);
        let sig = hex::encode(mac.finalize().into_bytes());
        out.clear();
        out.extend_from_slice(&self.head_before_sig);
        out.extend_from_slice(sig.as_bytes());
        out.extend_from_slice(&self.head_after_sig);
        out.extend_from_slice(&self.body_prefix);
        out.extend_from_slice(tail.as_bytes());
        out.extend_from_slice(self.body_suffix);
    }

    fn body_len(&self) -> usize {
        self.body_prefix.len() + ID_TAIL + self.body_suffix.len()
    }
}

/// What one connection saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    /// When (ms since the window opened) each of `latencies_us` completed.
    done_ms: Vec<u32>,
    statuses: BTreeMap<u16, u64>,
    /// For 200 answers: the `"status"` value of the JSON body (accepted, duplicate, ok, …).
    bodies: BTreeMap<String, u64>,
    /// Answers in the window that were not 200 with "accepted" (switchyard) or "ok" (nginx).
    bad_window: u64,
    /// The same outside the window (warm-up, or completed after it closed).
    bad_outside: u64,
    /// 200 "accepted" answers over the whole run (warm-up and tail included).
    accepted_total: u64,
    io_errors: u64,
    reconnects: u64,
    first_error: Option<String>,
}

struct Answer {
    status: u16,
    body_status: Option<String>,
    close: bool,
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn body_status(body: &[u8]) -> Option<String> {
    let key = b"\"status\":\"";
    let at = find(body, key)? + key.len();
    let end = body[at..].iter().position(|&b| b == b'"')?;
    Some(String::from_utf8_lossy(&body[at..at + end]).into_owned())
}

/// Reads one response with a Content-Length body (what both nginx and axum send).
async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Answer> {
    buf.clear();
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-answer",
            ));
        }
    };
    let head = std::str::from_utf8(&buf[..head_end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 header"))?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad status line"))?;
    let mut len = None;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            len = value.parse::<usize>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            close = true;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked answers are not supported",
            ));
        }
    }
    let len = len.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no content-length"))?;
    while buf.len() < head_end + len {
        buf.reserve(head_end + len - buf.len());
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed mid-body",
            ));
        }
    }
    let body_status = if status == 200 {
        body_status(&buf[head_end..head_end + len])
    } else {
        None
    };
    Ok(Answer {
        status,
        body_status,
        close,
    })
}

async fn connect(addr: &str) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// When one connection sends, open loop: every `interval`, from `first`.
#[derive(Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Duration,
}

async fn connection(
    conn: usize,
    addr: Arc<str>,
    template: Arc<Template>,
    window: (Instant, Instant),
    schedule: Option<Schedule>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let (open, close) = window;
    let mut next = schedule.map(|s| s.first);
    let mut free_since = Instant::now();
    let mut tally = Tally {
        latencies_us: Vec::with_capacity(1 << 16),
        ..Tally::default()
    };
    let mut req = Vec::with_capacity(template.body_len() + 512);
    let mut buf = Vec::with_capacity(8192);
    let mut stream: Option<TcpStream> = None;
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) && Instant::now() < close {
        let s = match stream.as_mut() {
            Some(s) => s,
            None => match connect(&addr).await {
                Ok(s) => stream.insert(s),
                Err(e) => {
                    tally.io_errors += 1;
                    tally
                        .first_error
                        .get_or_insert_with(|| format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        template.request(conn, seq, &mut req);
        seq += 1;
        let started = match (next.as_mut(), schedule) {
            (Some(at), Some(s)) => {
                let due = *at;
                *at += s.interval;
                if due > Instant::now() {
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                }
                // Busy past its time (the server held the connection): from the schedule;
                // free in time, late only by this generator's timer: from the send.
                if free_since > due {
                    due
                } else {
                    Instant::now()
                }
            }
            _ => Instant::now(),
        };
        let result = async {
            s.write_all(&req).await?;
            read_answer(s, &mut buf).await
        }
        .await;
        let done = Instant::now();
        free_since = done;
        match result {
            Ok(a) => {
                let good = a.status == 200
                    && matches!(a.body_status.as_deref(), Some("accepted") | Some("ok"));
                if a.status == 200 && a.body_status.as_deref() == Some("accepted") {
                    tally.accepted_total += 1;
                }
                if done >= open && done <= close {
                    let us = (done - started).as_micros().min(u32::MAX as u128) as u32;
                    tally.latencies_us.push(us);
                    tally
                        .done_ms
                        .push((done - open).as_millis().min(u32::MAX as u128) as u32);
                    if !good {
                        tally.bad_window += 1;
                    }
                    *tally.statuses.entry(a.status).or_default() += 1;
                    if a.status == 200 {
                        *tally
                            .bodies
                            .entry(a.body_status.unwrap_or_else(|| "?".into()))
                            .or_default() += 1;
                    }
                } else if !good {
                    tally.bad_outside += 1;
                }
                if a.close {
                    stream = None;
                    tally.reconnects += 1;
                }
            }
            Err(e) => {
                tally.io_errors += 1;
                tally.first_error.get_or_insert_with(|| e.to_string());
                stream = None;
                tally.reconnects += 1;
            }
        }
    }
    tally
}

/// One generator thread: its connections on a single-threaded runtime.
fn run_thread(
    conns: Vec<usize>,
    addr: Arc<str>,
    template: Arc<Template>,
    window: (Instant, Instant),
    schedules: Vec<Option<Schedule>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Tally>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = runtime.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .zip(schedules)
            .map(|(c, schedule)| {
                tokio::spawn(connection(
                    c,
                    Arc::clone(&addr),
                    Arc::clone(&template),
                    window,
                    schedule,
                    Arc::clone(&stop),
                ))
            })
            .collect();
        // A hung connection must not hang the run: give up 30 s after the window closed.
        let deadline = tokio::time::Instant::from_std(window.1 + Duration::from_secs(30));
        let mut out = Vec::new();
        for t in tasks {
            match tokio::time::timeout_at(deadline, t).await {
                Ok(Ok(tally)) => out.push(tally),
                Ok(Err(e)) => anyhow::bail!("connection task failed: {e}"),
                Err(_) => {
                    stop.store(true, Ordering::Relaxed);
                    anyhow::bail!("a connection did not finish within 30 s of the window's end");
                }
            }
        }
        Ok::<_, anyhow::Error>(out)
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    out
}

fn main() -> anyhow::Result<()> {
    // `cargo test --all-targets` runs bench targets without arguments: nothing to load then.
    if !std::env::args().any(|a| a.starts_with("--url")) {
        eprintln!("webhook_load: the load generator of benches/webhooks.sh; give --url to run it");
        return Ok(());
    }
    let args = Args::parse();
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--url must start with http://"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let pids: Vec<(String, String)> = args
        .cpu_pids
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(n, p)| (n.to_string(), p.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--cpu-pid wants NAME=PID, got {s}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:012x}", now.as_nanos() as u64 & 0xffff_ffff_ffff));
    let template = Arc::new(Template::new(
        host,
        path,
        &args.secret,
        args.body_bytes,
        run_id,
        now.as_secs() as i64,
    ));

    // The fast signature must be Stripe's: check one request against the crate's signer.
    {
        let mut req = Vec::new();
        template.request(7, 42, &mut req);
        let text = String::from_utf8(req.clone())?;
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("no head"))?;
        anyhow::ensure!(
            body.len() == args.body_bytes,
            "body is {} bytes, wanted {}",
            body.len(),
            args.body_bytes
        );
        serde_json::from_str::<serde_json::Value>(body)
            .map_err(|e| anyhow::anyhow!("body is not JSON: {e}"))?;
        let want = switchyard::source::webhook::verify::sign::stripe(
            &args.secret,
            template.t,
            body.as_bytes(),
        );
        anyhow::ensure!(
            head.lines()
                .any(|l| l == format!("Stripe-Signature: {want}")),
            "the generator's signature differs from sign::stripe"
        );
    }

    let start = Instant::now();
    let open = start + Duration::from_secs_f64(args.warmup);
    let close = open + Duration::from_secs_f64(args.duration);
    let stop = Arc::new(AtomicBool::new(false));

    // Samples at the window's edges, from a plain thread (not competing with the runtime's).
    let sampler = {
        let pids = pids.clone();
        std::thread::spawn(move || {
            std::thread::sleep(open.saturating_duration_since(Instant::now()));
            let a = sample(&pids);
            let a_at = Instant::now();
            std::thread::sleep(close.saturating_duration_since(Instant::now()));
            let b = sample(&pids);
            (a, b, Instant::now() - a_at)
        })
    };

    // Like wrk -tN: N threads, each with its own single-threaded event loop and its share of
    // the connections (no work stealing, no cross-thread wake-ups).
    let addr: Arc<str> = Arc::from(host);
    let threads = args.threads.clamp(1, args.connections.max(1));
    // Open loop: each connection every connections/rate seconds, staggered evenly.
    let schedule = |c: usize| {
        (args.rate > 0.0).then(|| {
            let interval = Duration::from_secs_f64(args.connections as f64 / args.rate);
            Schedule {
                first: start + interval.mul_f64(c as f64 / args.connections as f64),
                interval,
            }
        })
    };
    let workers: Vec<_> = (0..threads)
        .map(|k| {
            let conns: Vec<usize> = (0..args.connections).filter(|c| c % threads == k).collect();
            let schedules = conns.iter().map(|&c| schedule(c)).collect();
            let (addr, template, stop) =
                (Arc::clone(&addr), Arc::clone(&template), Arc::clone(&stop));
            std::thread::spawn(move || {
                run_thread(conns, addr, template, (open, close), schedules, stop)
            })
        })
        .collect();
    let mut tallies: Vec<Tally> = Vec::new();
    for w in workers {
        tallies.extend(
            w.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??,
        );
    }
    let (a, b, sampled) = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;

    if let Some(path) = &args.timeline {
        use std::io::Write;
        let mut f = io::BufWriter::new(std::fs::File::create(path)?);
        for t in &tallies {
            for (ms, us) in t.done_ms.iter().zip(&t.latencies_us) {
                writeln!(f, "{ms} {us}")?;
            }
        }
        f.flush()?;
    }
    let mut lat: Vec<u32> = Vec::new();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut bodies: BTreeMap<String, u64> = BTreeMap::new();
    let mut bad_window = 0;
    let (mut bad_outside, mut accepted_total, mut io_errors, mut reconnects) = (0, 0, 0, 0);
    let mut first_error = None;
    for t in tallies {
        lat.extend_from_slice(&t.latencies_us);
        for (k, v) in t.statuses {
            *statuses.entry(k).or_default() += v;
        }
        for (k, v) in t.bodies {
            *bodies.entry(k).or_default() += v;
        }
        bad_window += t.bad_window;
        bad_outside += t.bad_outside;
        accepted_total += t.accepted_total;
        io_errors += t.io_errors;
        reconnects += t.reconnects;
        if first_error.is_none() {
            first_error = t.first_error;
        }
    }
    lat.sort_unstable();
    let n = lat.len() as u64;
    let secs = args.duration;
    let hz = clk_tck();
    let mut cpu: BTreeMap<String, f64> = BTreeMap::new();
    for (i, (name, _)) in pids.iter().enumerate() {
        let d = match (a.procs[i], b.procs[i]) {
            (Some(x), Some(y)) => (y.saturating_sub(x)) as f64 / hz,
            _ => f64::NAN,
        };
        *cpu.entry(name.clone()).or_default() += d;
    }
    let non_200: u64 = statuses
        .iter()
        .filter(|(k, _)| **k != 200)
        .map(|(_, v)| v)
        .sum();
    let mean = if n > 0 {
        lat.iter().map(|&x| x as f64).sum::<f64>() / n as f64
    } else {
        f64::NAN
    };
    let out = serde_json::json!({
        "url": args.url,
        "connections": args.connections,
        "rate": args.rate,
        "threads": args.threads,
        "body_bytes": args.body_bytes,
        "run_id": template.run_id,
        "seconds": secs,
        "sampled_seconds": sampled.as_secs_f64(),
        "requests": n,
        "rps": n as f64 / secs,
        "p50_us": percentile(&lat, 50.0),
        "p90_us": percentile(&lat, 90.0),
        "p99_us": percentile(&lat, 99.0),
        "p999_us": percentile(&lat, 99.9),
        "max_us": lat.last().copied().unwrap_or(0),
        "mean_us": mean,
        "statuses": statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
        "bodies": bodies,
        "non_200": non_200,
        "bad_window": bad_window,
        "bad_outside_window": bad_outside,
        "accepted_total": accepted_total,
        "io_errors": io_errors,
        "reconnects": reconnects,
        "first_error": first_error,
        "cpu_s": cpu,
        "generator_cpu_s": (b.own.saturating_sub(a.own)) as f64 / hz,
        "machine_busy_s": (b.machine.0.saturating_sub(a.machine.0)) as f64 / hz,
        "steal_s": (b.machine.1.saturating_sub(a.machine.1)) as f64 / hz,
        "load1_start": a.load1,
        "load1_end": b.load1,
    });
    println!("{out}");
    eprintln!(
        "{}: {:.0} req/s ({n} in {secs} s), p50 {:.0} µs, p99 {:.0} µs, statuses {:?}, bodies {:?}, io errors {io_errors}, cpu {:?}, generator {:.2} s",
        args.url,
        n as f64 / secs,
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        statuses,
        bodies,
        cpu,
        (b.own.saturating_sub(a.own)) as f64 / hz,
    );
    Ok(())
}
