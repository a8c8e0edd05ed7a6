//! The command line as a platform engineer uses it in CI.

use std::process::Command;

use crate::support::scratch;

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

#[test]
fn check_accepts_the_shipped_configuration() {
    // Without the admin token's digest it is refused, naming the variable (fail closed).
    let out = switchyard()
        .args(["check", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml"))
        .env_remove("SWITCHYARD_ADMIN_TOKEN_SHA256")
        .output()
        .expect("run switchyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("SWITCHYARD_ADMIN_TOKEN_SHA256"),
        "{stderr}"
    );
    let out = switchyard()
        .args(["check", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml"))
        .env("SWITCHYARD_ADMIN_TOKEN_SHA256", "0".repeat(64))
        .output()
        .expect("run switchyard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("OK"), "{stdout}");
}

#[test]
fn check_exits_1_with_every_error_and_the_global_flag_works_before_the_subcommand() {
    let dir = scratch();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[kafka]\nbootstrap_servers = 9092\n[schema_registry]\nurl = \"ftp://x\"\n[surces.a]\n",
    )
    .expect("write");
    let out = switchyard()
        .arg("-c")
        .arg(&path)
        .arg("check")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:2:21: invalid type: integer `9092`, expected a string"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:4:7: schema registry url `ftp://x` is not an http(s) URL"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml:5:2: unknown section `surces`"),
        "{stderr}"
    );
    assert!(stderr.contains("3 errors"), "{stderr}");
}

const ROUTES: &str = r#"
[kafka]
bootstrap_servers = "127.0.0.1:9"
[schema_registry]
url = "http://127.0.0.1:9"
[sources.stripe]
type = "webhook"
provider = "stripe"
secrets = ["whsec_x"]
[sources.appdb]
type = "postgres"
url = "postgres://u@127.0.0.1:9/app"
tables = ["public.orders", "public.customers"]
[[routes]]
name = "payments"
source = "stripe"
topic = "payments"
event_types = ["payment_intent.*"]
key = "/data/object/id"
[[routes]]
name = "refunds"
source = "stripe"
topic = "refunds"
event_types = ["charge.refunded"]
[[routes]]
name = "big-orders"
source = "appdb"
tables = ["public.orders"]
ops = ["insert", "update"]
filter = "after.amount > 100 && after.status != 'draft'"
[[routes]]
name = "deletes"
source = "appdb"
ops = ["delete"]
[[routes]]
name = "customers-pii-safe"
source = "appdb"
tables = ["public.customers"]
topic = "customers"
[routes.transform]
mask = { email = "sha256", phone = "redact" }
drop = ["internal_notes"]
rename = { cust_id = "customer_id" }
[router]
mask_key = "k"
"#;

#[test]
fn route_dry_runs_a_webhook_sample_offline() {
    let dir = scratch();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, ROUTES).expect("write");
    let sample = dir.path().join("payment.json");
    std::fs::write(
        &sample,
        r#"{"headers": {"Stripe-Signature": "t=1,v1=00"},
            "body": {"id": "evt_1", "type": "payment_intent.succeeded",
                     "data": {"object": {"id": "pi_42", "amount": 4200}}}}"#,
    )
    .expect("write");
    let out = switchyard()
        .args(["route", "--source", "stripe", "--event"])
        .arg(&sample)
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("route payments: yes"), "{stdout}");
    assert!(stdout.contains("  topic:   payments"), "{stdout}");
    assert!(stdout.contains("  key:     \"pi_42\""), "{stdout}");
    assert!(
        stdout.contains("\"source\": \"switchyard/stripe\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("route refunds: no — type `payment_intent.succeeded` matches none of event_types [\"charge.refunded\"]"),
        "{stdout}"
    );
}

#[test]
fn route_dry_runs_a_change_sample_as_json_for_scripts() {
    let dir = scratch();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, ROUTES).expect("write");
    let sample = dir.path().join("order.json");
    std::fs::write(
        &sample,
        r#"{"table": "public.orders", "op": "insert",
            "columns": [{"name": "id", "type": "bigint", "key": true},
                        {"name": "amount", "type": "numeric(10,2)", "nullable": false},
                        {"name": "status", "type": "text"}],
            "after": {"id": 7, "amount": "150.00", "status": "paid"}}"#,
    )
    .expect("write");
    let run = |sample: &std::path::Path| {
        let out = switchyard()
            .args(["route", "--format", "json", "--source", "appdb", "--event"])
            .arg(sample)
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let out = run(&sample);
    let routes = out["routes"].as_array().expect("routes");
    assert_eq!(routes.len(), 3, "every route of the source is explained");
    assert_eq!(routes[0]["route"], "big-orders");
    assert_eq!(routes[0]["matched"], true);
    assert_eq!(routes[0]["topic"], "appdb.public.orders");
    assert_eq!(routes[0]["key"], serde_json::json!({"id": 7}));
    assert_eq!(routes[0]["value"]["op"], "c");
    assert_eq!(routes[0]["value"]["after"]["amount"], "150.00");
    assert_eq!(routes[0]["value_subject"], "appdb.public.orders-value");
    assert_eq!(routes[1]["matched"], false);
    assert!(
        routes[1]["reason"]
            .as_str()
            .expect("reason")
            .contains("operation `c` is not in ops")
    );
    // A draft order does not pass the filter, and the policy for unmatched events is shown.
    std::fs::write(
        &sample,
        r#"{"table": "public.orders", "op": "insert",
            "after": {"id": 8, "amount": 900, "status": "draft"}}"#,
    )
    .expect("write");
    let out = run(&sample);
    assert!(
        out["routes"][0]["reason"]
            .as_str()
            .expect("reason")
            .contains("does not hold"),
        "{out}"
    );
    assert_eq!(out["unmatched"], "drop");
    // A sample that cannot be used exits 2 with a message.
    std::fs::write(&sample, "{").expect("write");
    let out = switchyard()
        .args(["route", "--source", "appdb", "--event"])
        .arg(&sample)
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not JSON"));
}

#[test]
fn check_rejects_a_librdkafka_property_that_does_not_exist() {
    let dir = scratch();
    let path = dir.path().join("routes.toml");
    std::fs::write(
        &path,
        "[kafka]\nbootstrap_servers = \"127.0.0.1:9\"\n[kafka.properties]\n\"compresion.type\" = \"zstd\"\n\
         [schema_registry]\nurl = \"http://127.0.0.1:9\"\n",
    )
    .expect("write");
    let out = switchyard()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[kafka.properties]") && stderr.contains("compresion.type"),
        "{stderr}"
    );
}

#[test]
fn topics_and_lineage_describe_what_the_config_produces() {
    let dir = scratch();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, ROUTES).expect("write");
    let run = |args: &[&str]| {
        let out = switchyard()
            .args(args)
            .arg("-c")
            .arg(&path)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")
    };
    let topics = run(&["topics", "--format", "json"]);
    let find = |t: &str| {
        topics
            .as_array()
            .expect("list")
            .iter()
            .find(|x| x["topic"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no topic {t} in {topics}"))
    };
    let payments = find("payments");
    assert_eq!(payments["key"], "string: body at /data/object/id");
    assert_eq!(
        payments["subjects"],
        serde_json::json!(["payments-key", "payments-value"])
    );
    assert_eq!(payments["carries"], serde_json::json!(["payment_intent.*"]));
    let orders = find("appdb.public.orders");
    assert_eq!(orders["route"], "big-orders");
    assert_eq!(
        orders["filter"],
        "after.amount > 100 && after.status != 'draft'"
    );
    let lineage = run(&["lineage"]);
    let edges = lineage["edges"].as_array().expect("edges");
    for (from, to) in [
        ("source:appdb", "input:appdb:public.orders"),
        ("input:appdb:public.orders", "route:big-orders"),
        ("route:big-orders", "topic:appdb.public.orders"),
        ("route:payments", "topic:payments"),
    ] {
        assert!(
            edges.iter().any(|e| e["from"] == from && e["to"] == to),
            "{from} -> {to} in {lineage}"
        );
    }
}

#[test]
fn route_shows_a_transformed_change_and_topics_lists_what_is_masked() {
    let dir = scratch();
    let path = dir.path().join("routes.toml");
    std::fs::write(&path, ROUTES).expect("write");
    let sample = dir.path().join("customer.json");
    std::fs::write(
        &sample,
        r#"{"table": "public.customers", "op": "update",
            "after": {"id": 1, "email": "ana@example.com", "phone": "555", "internal_notes": "vip", "cust_id": 9}}"#,
    )
    .expect("write");
    let out = switchyard()
        .args(["route", "--format", "json", "--source", "appdb", "--event"])
        .arg(&sample)
        .arg("-c")
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let route = out["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .find(|r| r["route"] == "customers-pii-safe")
        .expect("route");
    let after = &route["value"]["after"];
    assert_eq!(after["phone"], "[redacted]");
    assert_eq!(
        after["email"].as_str().map(str::len),
        Some(64),
        "a hex HMAC-SHA256: {after}"
    );
    assert_eq!(after["customer_id"], 9);
    assert!(
        after.get("internal_notes").is_none() && after.get("cust_id").is_none(),
        "{after}"
    );
    let topics = switchyard()
        .args(["topics", "--format", "json", "-c"])
        .arg(&path)
        .output()
        .expect("run");
    let topics: serde_json::Value = serde_json::from_slice(&topics.stdout).expect("json");
    let t = topics
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["topic"] == "customers")
        .expect("customers topic");
    assert_eq!(
        t["masked"],
        serde_json::json!(["email (sha256)", "phone (redacted)"])
    );
    assert_eq!(t["dropped"], serde_json::json!(["internal_notes"]));
}
