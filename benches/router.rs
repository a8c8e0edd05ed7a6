//! Router + transform cost per event: a 10-route table over one postgres source (table and
//! operation filters, one CEL filter, one transform), routing one change event of 8 columns
//! and applying the transform of each route that takes it. No Avro, no I/O.
//!
//! `cargo bench --bench router` prints ns/event (median of 7 runs of 200,000 events, with the
//! spread). Under `cargo test` it runs a few events only, as a smoke test.
//! `ROUTER_BENCH_EVENTS=N` sets the events per run (e.g. a few thousand under callgrind:
//! `valgrind --tool=callgrind --toggle-collect='*route_one*' target/release/deps/router-… --bench`).
//!
//! Like the daemon (`src/main.rs`), the benchmark runs with mimalloc as its allocator.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use switchyard::config::Config;
use switchyard::event::{ChangeColumn, ChangePayload, Event, EventId, Payload};
use switchyard::router::RouteTable;
use switchyard::router::transform;

fn table() -> RouteTable {
    let mut text = String::from(
        "[kafka]\nbootstrap_servers = \"x:1\"\n[schema_registry]\nurl = \"http://x\"\n\
         [router]\nmask_key = \"bench\"\n\
         [sources.appdb]\ntype = \"postgres\"\nurl = \"postgres://u@h/app\"\ntables = [\"public.*\"]\n",
    );
    for i in 0..7 {
        text.push_str(&format!(
            "[[routes]]\nname = \"r{i}\"\nsource = \"appdb\"\ntables = [\"public.t{i}\"]\n"
        ));
    }
    let filter = if std::env::var_os("ROUTER_BENCH_NOFILTER").is_some() {
        String::new()
    } else {
        "filter = \"after.amount > 100 && after.status != 'draft'\"".to_string()
    };
    text.push_str(&format!(
        "[[routes]]\nname = \"all-orders\"\nsource = \"appdb\"\ntables = [\"public.orders\"]\nops = [\"insert\", \"update\"]\n\
         [[routes]]\nname = \"big-orders\"\nsource = \"appdb\"\ntables = [\"public.orders\"]\n\
         {filter}\n\
         [[routes]]\nname = \"pii-safe\"\nsource = \"appdb\"\ntables = [\"public.orders\"]\ntopic = \"orders.safe\"\n\
         [routes.transform]\nmask = {{ email = \"sha256\" }}\ndrop = [\"note\"]\nrename = {{ cust_id = \"customer_id\" }}\n",
    ));
    let config = Config::from_str_with_env(Path::new("bench.toml"), &text, |_| None)
        .unwrap_or_else(|e| panic!("bench config: {e}"));
    RouteTable::compile(&config)
}

fn event() -> Event {
    let col = |name: &str, oid: u32, typmod: i32| ChangeColumn {
        name: name.into(),
        type_oid: oid,
        type_modifier: typmod,
        nullable: name != "id",
        is_key: name == "id",
        doc: None,
    };
    let numeric = ((10 << 16) | 2) + 4;
    Event {
        id: EventId::from_lsn(0x16B_3748, 0),
        source: "appdb".into(),
        event_type: "c".into(),
        received_at_micros: 0,
        payload: Payload::Change(ChangePayload {
            database: "app".into(),
            schema: "public".into(),
            table: "orders".into(),
            table_doc: None,
            op: switchyard::event::ChangeOp::Create,
            columns: vec![
                col("id", 20, -1),
                col("cust_id", 23, -1),
                col("email", 25, -1),
                col("amount", 1700, numeric),
                col("status", 25, -1),
                col("note", 25, -1),
                col("created", 1184, -1),
                col("tags", 1009, -1),
            ]
            .into(),
            before: None,
            after: Some(vec![
                Some("1001".into()),
                Some("42".into()),
                Some("ana@example.com".into()),
                Some("150.00".into()),
                Some("paid".into()),
                Some("leave at the door".into()),
                Some("2026-11-22 10:00:00+00".into()),
                Some("{a,b}".into()),
            ]),
            commit_lsn: 0x16B_3748,
            tx_id: 7,
            commit_time_ms: 0,
            unchanged_toast: vec![],
            before_key_only: false,
            position: Default::default(),
        }),
    }
}

/// Routes one event and applies the transforms of the routes that take it.
#[inline(never)]
fn route_one(table: &RouteTable, e: &Event) -> usize {
    let mut n = 0;
    for m in table.route(e).into_iter().flatten() {
        n += 1;
        if let (Some(t), Payload::Change(c)) = (m.transform.as_deref(), &e.payload) {
            black_box(transform::change(c, t, &m.columns));
        }
    }
    n
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let table = table();
    let e = event();
    assert_eq!(
        route_one(&table, &e),
        3,
        "all-orders, big-orders and pii-safe take the event"
    );
    if !bench {
        return;
    }
    let events: u32 = std::env::var("ROUTER_BENCH_EVENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let mut per_event = Vec::new();
    for _ in 0..7 {
        let started = Instant::now();
        for _ in 0..events {
            black_box(route_one(&table, black_box(&e)));
        }
        per_event.push(started.elapsed().as_nanos() as f64 / f64::from(events));
    }
    per_event.sort_by(f64::total_cmp);
    if std::env::var_os("ROUTER_BENCH_PARTS").is_some() {
        let expr = "after.amount > 100 && after.status != 'draft'";
        let p = switchyard::router::filter::compile(expr, true).expect("cel");
        let needs = switchyard::router::filter::Needs::of(expr, &p, true);
        let t = Instant::now();
        for _ in 0..events {
            black_box(switchyard::router::filter::vars(black_box(&e), &needs));
        }
        println!(
            "vars: {:.0} ns",
            t.elapsed().as_nanos() as f64 / f64::from(events)
        );
        let t = Instant::now();
        for _ in 0..events {
            black_box(table.route(black_box(&e)));
        }
        println!(
            "route: {:.0} ns",
            t.elapsed().as_nanos() as f64 / f64::from(events)
        );
        if let Some(m) = table
            .route(&e)
            .into_iter()
            .flatten()
            .find(|m| m.transform.is_some())
            && let (Some(tr), Payload::Change(c)) = (m.transform.as_deref(), &e.payload)
        {
            let t = Instant::now();
            for _ in 0..events {
                black_box(transform::change(black_box(c), tr, &m.columns));
            }
            println!(
                "transform: {:.0} ns",
                t.elapsed().as_nanos() as f64 / f64::from(events)
            );
        }
        let v = switchyard::router::filter::vars(&e, &needs);
        let t = Instant::now();
        for _ in 0..events {
            black_box(switchyard::router::filter::holds(&p, black_box(&v)));
        }
        println!(
            "holds: {:.0} ns",
            t.elapsed().as_nanos() as f64 / f64::from(events)
        );
    }
    println!(
        "router + transform, 10 routes (1 CEL filter, 1 transform), 3 matches per event: median {:.0} ns/event (min {:.0}, max {:.0}) over 7 runs of {events}",
        per_event[3], per_event[0], per_event[6]
    );
}
