//! The console in a real browser (headless Chromium over WebDriver): sign in with a token,
//! filter the dead letters, open one (its payload masked), run a dry-run replay, confirm it,
//! see the entry replayed and the audit rows; the record is in Kafka once. With
//! `SWITCHYARD_SCREENSHOTS=1` the pages' screenshots are written to `docs/console/` (the
//! README's), else to the test's scratch directory.

use std::path::PathBuf;
use std::time::Duration;

use crate::admin_api::{OPERATOR, VIEWER, dead_letters, start};
use crate::support::consume::{decode, decoder, read_topic};
use crate::support::daemon;
use crate::support::webdriver::Browser;
use crate::support::{Stack, wait_for_async};

fn shots(scratch: &std::path::Path) -> PathBuf {
    if std::env::var_os("SWITCHYARD_SCREENSHOTS").is_some() {
        let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/console");
        std::fs::create_dir_all(&d).expect("docs/console");
        d
    } else {
        scratch.to_path_buf()
    }
}

/// Waits until the page (a job page refreshes itself while the job runs) says `what`.
async fn until_text(b: &Browser, what: &str) -> String {
    b.wait_text_for(what, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_signs_in_filters_opens_dry_runs_and_replays_an_entry_in_the_console() {
    let stack = Stack::start();
    let topic = "console-replay";
    let (sy, admin, config) = start(&stack, topic).await;
    let ids = dead_letters(&config, &["ui-1", "ui-2"]).await;
    let out = shots(stack.dir.path());
    let b = Browser::start(stack.dir.path()).await;

    // Not signed in: the login form.
    b.goto(&format!("{admin}/ui")).await;
    assert!(b.url().await.ends_with("/ui/login"), "{}", b.url().await);
    b.type_into("input[name=token]", "sy_wrong").await;
    b.click_away("button[type=submit]").await;
    let text = b.wait_text("not one of this instance's admin tokens").await;
    assert!(
        b.url().await.ends_with("/ui/login") && text.contains("Sign in"),
        "{text}\n{}",
        b.source().await
    );
    b.type_into("input[name=token]", OPERATOR).await;
    b.click_away("button[type=submit]").await;
    let text = b.wait_text("pending dead letters").await;
    assert!(
        text.contains("Overview") && text.contains("token:operator (operator)"),
        "{text}"
    );
    assert!(text.contains("2\npending dead letters"), "{text}");
    b.screenshot(&out.join("overview.png")).await;

    // Filter the list by route and class, with the form.
    b.goto(&format!("{admin}/ui/dead-letters")).await;
    b.choose("select[name=route]", "orders").await;
    b.choose("select[name=class]", "produce").await;
    b.click_away("form.filters button[type=submit]").await;
    let url = b.wait_url("class=produce").await;
    assert!(
        url.contains("route=orders") && url.contains("class=produce"),
        "{url}"
    );
    b.wait_text("Replay this selection").await;
    let html = b.source().await;
    for id in &ids {
        assert!(
            html.contains(&format!("href=\"/ui/dead-letters/{id}\"")),
            "entry {id} listed: {html}"
        );
    }
    b.screenshot(&out.join("dead-letters.png")).await;

    // Open the first: its error, its payload masked.
    b.click_away(&format!("a[href=\"/ui/dead-letters/{}\"]", ids[0]))
        .await;
    let text = b.wait_text("Payload").await;
    assert!(text.contains("the broker refused it"), "{text}");
    assert!(
        text.contains("[redacted]") && !text.contains("ui-1@example.com"),
        "{text}"
    );
    b.screenshot(&out.join("entry.png")).await;

    // Dry run first: what would be produced; then confirm.
    b.click_away("form[action=\"/ui/replays\"] button[type=submit]")
        .await;
    let text = until_text(&b, "Would be produced").await;
    let text = if text.contains("Confirm replay") {
        text
    } else {
        until_text(&b, "Confirm replay").await
    };
    assert!(text.contains("would produce"), "{text}");
    b.screenshot(&out.join("dry-run.png")).await;
    let dry_url = b.url().await;
    b.click("form[action=\"/ui/replays\"] button[type=submit]")
        .await;
    wait_for_async("the replay's page", Duration::from_secs(20), || async {
        let url = b.url().await;
        (url != dry_url && url.contains("/ui/replays/")).then_some(())
    })
    .await;
    let text = until_text(&b, "done").await;
    assert!(text.contains("Delivered\n1"), "{text}");
    b.screenshot(&out.join("replay.png")).await;

    // The entry is replayed; the audit trail says who did what.
    b.goto(&format!("{admin}/ui/dead-letters/{}", ids[0])).await;
    assert!(
        b.text().await.contains("Status\nreplayed"),
        "{}",
        b.text().await
    );
    b.goto(&format!("{admin}/ui/audit")).await;
    let text = b.text().await;
    assert!(text.contains("The chain is intact"), "{text}");
    assert!(
        text.contains("replay --dry-run started") && text.contains("replay started"),
        "{text}"
    );
    assert!(text.contains("token:operator"), "{text}");
    b.screenshot(&out.join("audit.png")).await;
    b.goto(&format!("{admin}/ui/routes")).await;
    assert!(b.source().await.contains("<svg role=\"img\""));
    b.screenshot(&out.join("routes.png")).await;

    // A viewer sees no replay or discard buttons.
    b.click_away("header form button").await;
    b.wait_url("/ui/login").await;
    b.type_into("input[name=token]", VIEWER).await;
    b.click_away("button[type=submit]").await;
    b.wait_text("token:viewer").await;
    b.goto(&format!("{admin}/ui/dead-letters/{}", ids[1])).await;
    b.wait_text("Payload").await;
    let html = b.source().await;
    assert!(
        !html.contains("action=\"/ui/replays\"") && !html.contains("/discard"),
        "{html}"
    );
    b.close().await;

    // In Kafka once.
    let bootstrap = stack.broker.bootstrap();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, topic, 2, Duration::from_secs(10))
    })
    .await
    .expect("consumer");
    let dec = decoder(&stack.registry.url());
    let mut got = Vec::new();
    for r in &records {
        got.push(
            decode(&dec, &r.value).await.1["id"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(got, ["ui-1"]);
    daemon::stop(sy).await;
}
