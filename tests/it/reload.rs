//! Reloading the routes on SIGHUP: a valid file takes effect for the next event, an invalid one
//! is refused and the running routes stay; no event is lost meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::consume::{decode, decoder, read_topic};
use crate::support::{Stack, free_port, wait_for_async};

fn config(stack: &Stack, port: u16, topic: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[kafka]\nbootstrap_servers = \"{}\"\n\
         [schema_registry]\nurl = \"{}\"\n[sources.hooks]\ntype = \"webhook\"\nprovider = \"none\"\nallow_unauthenticated = true\n\
         [[routes]]\nname = \"r\"\nsource = \"hooks\"\ntopic = \"{topic}\"\n{extra}",
        stack.broker.bootstrap(),
        stack.registry.url()
    )
}

fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_routes_under_load_and_an_invalid_file_changes_nothing() {
    let stack = Stack::start();
    let port = free_port();
    let path = stack.dir.path().join("routes.toml");
    std::fs::write(&path, config(&stack, port, "before", "")).expect("config");
    let log = stack.dir.path().join("switchyard.log");
    let sy = crate::support::daemon::spawn_binary(&path, log.clone());
    let url = format!("http://127.0.0.1:{port}/webhooks/hooks");
    let client = reqwest::Client::new();
    let post = move |id: usize| {
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", format!("e-{id}"))
                .body(format!(r#"{{"n":{id}}}"#))
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }
    };
    wait_for_async("switchyard to accept", Duration::from_secs(30), || async {
        (post(0).await == 200).then_some(())
    })
    .await;

    // Load: events in a steady stream while the routes change.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(1));
    let load = {
        let stop = Arc::clone(&stop);
        let sent = Arc::clone(&sent);
        let post = post.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let id = sent.fetch_add(1, Ordering::SeqCst);
                let status = post(id).await;
                if status != 200 {
                    failures.push((id, status));
                }
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await; // let some load through first
    std::fs::write(&path, config(&stack, port, "after", "")).expect("config");
    hangup(sy.pid());
    // The next events go to `after`.
    let marker = 1_000_000;
    wait_for_async(
        "the new route to take events",
        Duration::from_secs(30),
        || async {
            let bootstrap = stack.broker.bootstrap();
            (post(marker).await == 200).then_some(())?;
            let r = tokio::task::spawn_blocking(move || {
                std::panic::catch_unwind(|| {
                    read_topic(&bootstrap, "after", 1, Duration::from_secs(2))
                })
                .unwrap_or_default()
            })
            .await
            .ok()?;
            (!r.is_empty()).then_some(())
        },
    )
    .await;
    // An invalid file is refused; the running routes stay.
    std::fs::write(&path, config(&stack, port, "invalid topic!", "")).expect("config");
    hangup(sy.pid());
    wait_for_async(
        "the refusal to be logged",
        Duration::from_secs(30),
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            text.contains("configuration NOT reloaded").then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let failures = load.await.expect("load");
    assert!(
        failures.is_empty(),
        "every request under reload was answered 200: {failures:?}"
    );
    let last = sent.load(Ordering::SeqCst);
    assert_eq!(
        post(last).await,
        200,
        "still taking events after the refused reload"
    );

    let dec = decoder(&stack.registry.url());
    let mut ids = std::collections::BTreeSet::new();
    for topic in ["before", "after"] {
        let records = tokio::task::spawn_blocking({
            let bootstrap = stack.broker.bootstrap();
            move || read_topic(&bootstrap, topic, usize::MAX, Duration::from_secs(4))
        })
        .await
        .expect("consumer");
        for r in &records {
            let (_, v) = decode(&dec, &r.value).await;
            ids.insert(v["id"].as_str().expect("id").to_string());
        }
    }
    let missing: Vec<usize> = (0..=last)
        .filter(|i| !ids.contains(&format!("e-{i}")))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "events lost across the reloads: {missing:?}"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("configuration reloaded"), "{text}");
    assert!(
        text.contains("not a legal") || text.contains("topic"),
        "the refusal names the error:\n{text}"
    );
}
