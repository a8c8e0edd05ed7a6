//! `switchyard check --registry` against a real rivven-schema registry: nothing is registered,
//! every subject is reported, exit 0 / 1 / 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::registry::Registry;
use crate::support::{free_port, scratch};

const PAYMENT_V1: &str = r#"{"type": "record", "name": "Payment", "namespace": "com.acme",
  "fields": [{"name": "id", "type": "string"}]}"#;
const PAYMENT_DEFAULTED: &str = r#"{"type": "record", "name": "Payment", "namespace": "com.acme",
  "fields": [{"name": "id", "type": "string"}, {"name": "currency", "type": "string", "default": "EUR"}]}"#;
const PAYMENT_REQUIRED: &str = r#"{"type": "record", "name": "Payment", "namespace": "com.acme",
  "fields": [{"name": "id", "type": "string"}, {"name": "currency", "type": "string"}]}"#;

fn write_config(dir: &Path, registry: &str, schema: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("payment.avsc"), schema).expect("write schema");
    let text = format!(
        r#"
[kafka]
bootstrap_servers = "127.0.0.1:1"

[schema_registry]
url = "{registry}"
timeout = "3s"

[sources.payments]
type = "webhook"
provider = "none"
allow_unauthenticated = true

[[routes]]
name = "typed-payments"
source = "payments"
topic = "payments"
value_schema = "payment.avsc"

[[routes]]
name = "by-type"
source = "payments"
topic = "payments.{{event_type}}"
max_topics = 50
{extra}
"#
    );
    let path = dir.join("routes.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn check(config: &Path) -> (Option<i32>, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--registry", "-c"])
        .arg(config)
        .output()
        .expect("run switchyard");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

async fn subjects(registry: &Registry) -> Vec<String> {
    reqwest::get(format!("{}/subjects", registry.url()))
        .await
        .expect("subjects")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_registry_reports_new_compatible_and_rejected_subjects_without_registering() {
    let dir = scratch();
    let registry = Registry::start(dir.path());
    let path = write_config(dir.path(), &registry.url(), PAYMENT_V1, "");

    let (code, out) = check(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("payments-value: new subject (route typed-payments)"),
        "{out}"
    );
    assert!(out.contains("payments-key: new subject"), "{out}");
    assert!(
        out.contains("skipped: route `by-type`: its topic depends on the event type"),
        "{out}"
    );
    assert!(
        subjects(&registry).await.is_empty(),
        "a check registers nothing"
    );

    // The subject exists with v1 and BACKWARD compatibility.
    let v1 = switchyard::encode::typed::ValueSchema::from_json("v1.avsc".into(), PAYMENT_V1)
        .expect("schema");
    let http = reqwest::Client::new();
    let r = http
        .post(format!(
            "{}/subjects/payments-value/versions",
            registry.url()
        ))
        .header("content-type", "application/vnd.schemaregistry.v1+json")
        .json(&serde_json::json!({"schema": v1.envelope().json()}))
        .send()
        .await
        .expect("register");
    assert!(
        r.status().is_success(),
        "{}",
        r.text().await.unwrap_or_default()
    );
    registry
        .set_compatibility(Some("payments-value"), "BACKWARD")
        .await;

    let (code, out) = check(&path);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("payments-value: compatible, already the latest version"),
        "{out}"
    );

    // A new field with a default would be compatible, but rivven-schema 0.0.22 calls
    // timestamp-micros (the envelope's `time`) incompatible with itself, so any change to a
    // CloudEvent subject under BACKWARD is refused there; the check reports what the registry
    // would do.
    write_config(dir.path(), &registry.url(), PAYMENT_DEFAULTED, "");
    let (code, out) = check(&path);
    assert!(
        out.contains("payments-value: compatible (route typed-payments)")
            || out.contains("writer=TimestampMicros, reader=TimestampMicros"),
        "{out}"
    );
    assert!(matches!(code, Some(0 | 1)), "{out}");

    // A new required field: readers of the new schema cannot read old records.
    write_config(dir.path(), &registry.url(), PAYMENT_REQUIRED, "");
    let (code, out) = check(&path);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("payments-value: would be rejected (route typed-payments)"),
        "{out}"
    );
    // The registry's reasons are shown under the subject. (rivven-schema names only its first
    // objection, the timestamp-micros one above, not the new required field.)
    assert!(
        out.lines()
            .any(|l| l.starts_with("      ") && !l.trim().is_empty()),
        "the registry's reason is shown: {out}"
    );
    assert!(out.contains("would be rejected by the registry"), "{out}");
    assert_eq!(
        subjects(&registry).await,
        ["payments-value"],
        "still nothing registered by the checks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_registry_exits_2_when_the_registry_or_the_database_cannot_be_reached() {
    let dir = scratch();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let path = write_config(dir.path(), &closed, PAYMENT_V1, "");
    let (code, out) = check(&path);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("payments-value: cannot check: registry unreachable"),
        "{out}"
    );

    let registry = Registry::start(dir.path());
    let db = format!(
        r#"
[sources.appdb]
type = "postgres"
url = "postgres://switchyard@127.0.0.1:{}/app"
tables = ["public.*"]

[[routes]]
name = "changes"
source = "appdb"
"#,
        free_port()
    );
    let path = write_config(dir.path(), &registry.url(), PAYMENT_V1, &db);
    let (code, out) = check(&path);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("payments-value: new subject"), "{out}");
    assert!(
        out.contains("cannot check: source `appdb`: the change schemas of route `changes` need the table shapes"),
        "{out}"
    );
}
