//! Traces reach an OTLP/HTTP collector: a span per webhook request (continuing the sender's
//! `traceparent`) and per CDC transaction, with `route` → `encode`, `produce` children; each
//! Kafka record's `traceparent` header names its `produce` span.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use crate::support::cdc::{Db, wait_for_slot};
use crate::support::consume::read_topic;
use crate::support::{Stack, daemon, wait_for_async};

/// A span as the collector received it (ids in lowercase hex).
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: HashMap<String, String>,
    /// End time, nanoseconds since the epoch.
    end: u64,
}

/// An OTLP/HTTP receiver on a free port: every span POSTed to `/v1/traces`.
async fn collector() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&spans);
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let sink = Arc::clone(&sink);
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut all = sink.lock().expect("lock");
                for rs in req.resource_spans {
                    for ss in rs.scope_spans {
                        for s in ss.spans {
                            let attributes = s
                                .attributes
                                .iter()
                                .map(|kv| {
                                    let v = kv
                                        .value
                                        .as_ref()
                                        .and_then(|v| v.value.as_ref())
                                        .map(|v| format!("{v:?}"))
                                        .unwrap_or_default();
                                    (kv.key.clone(), v)
                                })
                                .collect();
                            all.push(Received {
                                name: s.name,
                                trace: hex::encode(&s.trace_id),
                                id: hex::encode(&s.span_id),
                                parent: hex::encode(&s.parent_span_id),
                                attributes,
                                end: s.end_time_unix_nano,
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

/// Up to `n` records of `topic` (30 s at most).
async fn read(
    bootstrap: &str,
    topic: &'static str,
    n: usize,
) -> Vec<crate::support::consume::Consumed> {
    let b = bootstrap.to_string();
    tokio::task::spawn_blocking(move || read_topic(&b, topic, n, Duration::from_secs(30)))
        .await
        .expect("consumer")
}

fn header(r: &crate::support::consume::Consumed, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_cdc_spans_reach_the_collector_and_kafka_headers_continue_them() {
    let stack = Stack::start();
    let Db {
        pg,
        db,
        client: admin,
    } = Db::start(
        "traced",
        "CREATE TABLE orders (id bigint PRIMARY KEY);
             CREATE TABLE snap (id bigint PRIMARY KEY);
             INSERT INTO snap SELECT generate_series(1, 5);",
    )
    .await;
    let (endpoint, spans) = collector().await;
    let port = crate::support::free_port();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(
        &path,
        format!(
            r#"{head}
[telemetry]
otlp_endpoint = "{endpoint}"
[sources.hooks]
type = "webhook"
provider = "none"
allow_unauthenticated = true
[sources.appdb]
type = "postgres"
url = "{}"
tables = ["public.orders", "public.snap"]
snapshot = "initial"
snapshot_chunk_rows = 2
[[routes]]
name = "hooks"
source = "hooks"
topic = "traced-hooks"
[[routes]]
name = "orders"
source = "appdb"
tables = ["public.orders"]
topic = "traced-orders"
[[routes]]
name = "snap"
source = "appdb"
tables = ["public.snap"]
topic = "traced-snap"
[[routes]]
name = "audit"
source = "appdb"
ops = ["message"]
topic = "traced-audit"
"#,
            pg.url(&db),
            head = crate::support::config_head(
                &format!("127.0.0.1:{port}"),
                &stack.broker.bootstrap(),
                &stack.registry.url()
            ),
        ),
    )
    .expect("config");
    let mut sy = daemon::spawn_binary(&path, stack.dir.path().join("switchyard.log"));
    let url = format!("http://127.0.0.1:{port}");
    let client = daemon::client(Duration::from_secs(30));
    wait_for_async(
        "switchyard to be ready",
        Duration::from_secs(60),
        || async {
            let r = client.get(format!("{url}/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    wait_for_slot(&admin, "switchyard_appdb").await;

    let sender_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sender_span = "00f067aa0ba902b7";
    let r = client
        .post(format!("{url}/webhooks/hooks"))
        .header("content-type", "application/json")
        .header("webhook-id", "t-1")
        .header("traceparent", format!("00-{sender_trace}-{sender_span}-01"))
        .body(r#"{"n":1}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    admin
        .batch_execute(
            "BEGIN; INSERT INTO orders VALUES (1); INSERT INTO orders VALUES (2); COMMIT;
             SELECT pg_logical_emit_message(false, 'audit', 'outside a transaction');",
        )
        .await
        .expect("transaction");

    let bootstrap = stack.broker.bootstrap();
    let hooks = read(&bootstrap, "traced-hooks", 1).await;
    let orders = read(&bootstrap, "traced-orders", 2).await;
    let snap = read(&bootstrap, "traced-snap", 5).await;
    let audit = read(&bootstrap, "traced-audit", 1).await;
    assert_eq!(
        (hooks.len(), orders.len(), snap.len(), audit.len()),
        (1, 2, 5, 1)
    );

    // An orderly stop sends the spans still batched.
    sy.signal("TERM");
    assert_eq!(sy.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let spans = spans.lock().expect("lock").clone();
    let by_id: HashMap<&str, &Received> = spans.iter().map(|s| (s.id.as_str(), s)).collect();
    let parent_of = |s: &Received| by_id.get(s.parent.as_str()).copied();

    // Webhook: the sender's trace continues; the record names its produce span.
    let webhook = spans
        .iter()
        .find(|s| s.name == "webhook")
        .unwrap_or_else(|| panic!("no webhook span in {spans:#?}"));
    assert_eq!(webhook.trace, sender_trace);
    assert_eq!(webhook.parent, sender_span);
    assert!(webhook.attributes["http.response.status_code"].contains("200"));
    let tp = header(&hooks[0], "traceparent").expect("traceparent header");
    let (trace, span) = (&tp[3..35], &tp[36..52]);
    assert_eq!(trace, sender_trace, "{tp}");
    let produce = by_id.get(span).expect("the header's span was exported");
    assert_eq!(produce.name, "produce");
    let route = parent_of(produce).expect("produce has a parent");
    assert_eq!(route.name, "route");
    assert_eq!(route.parent, webhook.id);
    assert!(
        spans
            .iter()
            .any(|s| s.name == "encode" && s.parent == route.id),
        "encode is a child of route"
    );

    // CDC: one span for the transaction, one route → encode, produce per row.
    let txn = spans
        .iter()
        .find(|s| s.name == "cdc.transaction")
        .unwrap_or_else(|| panic!("no transaction span in {spans:#?}"));
    assert_eq!(txn.parent, "", "a transaction starts a trace");
    let routes: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name == "route" && s.parent == txn.id)
        .collect();
    assert_eq!(routes.len(), 2, "{spans:#?}");
    for r in &orders {
        let tp = header(r, "traceparent").expect("traceparent header");
        assert_eq!(&tp[3..35], txn.trace, "{tp}");
        let produce = by_id.get(&tp[36..52]).expect("exported");
        assert_eq!(produce.name, "produce");
        let route = parent_of(produce).expect("parent");
        assert_eq!(route.parent, txn.id);
        // The transaction's span lasts until its rows are delivered: it covers its children.
        assert!(
            txn.end >= produce.end,
            "transaction ended {} ns before its produce span",
            produce.end - txn.end
        );
    }

    // Snapshot: a trace per chunk of 2 rows (2 + 2 + 1); each read names its chunk's trace.
    let chunks: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name == "cdc.snapshot.chunk")
        .collect();
    assert_eq!(chunks.len(), 3, "{chunks:#?}");
    let mut sizes: Vec<&str> = chunks
        .iter()
        .map(|c| c.attributes["switchyard.snapshot.rows"].as_str())
        .collect();
    sizes.sort_unstable();
    assert_eq!(sizes, ["IntValue(1)", "IntValue(2)", "IntValue(2)"]);
    for r in &snap {
        let tp = header(r, "traceparent").expect("traceparent header");
        let chunk = chunks
            .iter()
            .find(|c| c.trace == tp[3..35])
            .unwrap_or_else(|| panic!("no chunk trace for {tp}"));
        assert_eq!(chunk.parent, "", "a chunk starts a trace");
    }

    // A message outside a transaction is its own trace, lasting until it is durable.
    let message = spans
        .iter()
        .find(|s| s.name == "cdc.message")
        .unwrap_or_else(|| panic!("no message span in {spans:#?}"));
    assert!(message.attributes["switchyard.message.prefix"].contains("audit"));
    let tp = header(&audit[0], "traceparent").expect("traceparent header");
    assert_eq!(&tp[3..35], message.trace, "{tp}");
    let produce = by_id.get(&tp[36..52]).expect("exported");
    assert!(
        message.end >= produce.end,
        "the message span covers its delivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_replay_is_traced_and_its_record_names_the_replay() {
    let stack = Stack::start();
    let (endpoint, spans) = collector().await;
    let path = stack.dir.path().join("routes.toml");
    let write = |extra_route: &str| {
        std::fs::write(
            &path,
            format!(
                r#"{head}
[telemetry]
otlp_endpoint = "{endpoint}"
[router]
unmatched = "dlq"
[sources.hooks]
type = "webhook"
provider = "none"
allow_unauthenticated = true
[[routes]]
name = "orders"
source = "hooks"
event_types = ["order.*"]
topic = "traced-orders"
{extra_route}
"#,
                head = crate::support::config_head(
                    "127.0.0.1:0",
                    &stack.broker.bootstrap(),
                    &stack.registry.url()
                ),
            ),
        )
        .expect("config");
    };
    // No route takes invoices yet: the webhook is dead-lettered (class unroutable).
    write("");
    let config = switchyard::config::Config::load(&path).expect("config");
    let (sy, url) = daemon::start(config).await;
    let r = reqwest::Client::new()
        .post(format!("{url}/webhooks/hooks"))
        .header("webhook-id", "inv-1")
        .header("ce-type", "invoice.paid")
        .body(r#"{"invoice":1}"#)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("body").contains("dead_lettered"));
    daemon::stop(sy).await;

    // A route for invoices, then the on-call engineer replays.
    write(
        r#"[[routes]]
name = "invoices"
source = "hooks"
event_types = ["invoice.*"]
topic = "traced-invoices""#,
    );
    let (code, out) = crate::support::run_cli(&path, &["dlq", "replay", "--all", "--yes"]);
    assert_eq!(code, Some(0), "{out}");
    let records = tokio::task::spawn_blocking({
        let bootstrap = stack.broker.bootstrap();
        move || read_topic(&bootstrap, "traced-invoices", 2, Duration::from_secs(10))
    })
    .await
    .expect("consumer");
    assert_eq!(records.len(), 1);
    let tp = header(&records[0], "traceparent").expect("traceparent header");
    let spans = wait_for_async("the replay's spans", Duration::from_secs(20), || {
        let spans = Arc::clone(&spans);
        async move {
            let all = spans.lock().expect("lock").clone();
            all.iter().any(|s| s.name == "dlq.replay").then_some(all)
        }
    })
    .await;
    let replay = spans
        .iter()
        .find(|s| s.name == "dlq.replay")
        .expect("replay span");
    assert_eq!(replay.parent, "", "a replay starts its own trace");
    assert!(
        replay
            .attributes
            .get("switchyard.event_id")
            .is_some_and(|v| v.contains("inv-1")),
        "{replay:?}"
    );
    assert!(
        replay.attributes.contains_key("switchyard.dead_letter.id"),
        "{replay:?}"
    );
    // The record names the replay's `produce` span, a child of the replay.
    assert_eq!(&tp[3..35], replay.trace, "{tp}");
    let produce = spans
        .iter()
        .find(|s| s.id == tp[36..52])
        .expect("the produce span is exported");
    assert_eq!(produce.name, "produce");
    assert_eq!(produce.parent, replay.id);
    // It names the route the entry went to, as a live delivery's does.
    assert!(
        produce
            .attributes
            .get("switchyard.route")
            .is_some_and(|v| v.contains("invoices")),
        "{produce:?}"
    );
}
