//! The command line as a platform engineer uses it in CI.

use std::process::Command;

use crate::support::scratch;

fn switchyard() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

#[test]
fn check_accepts_the_shipped_configuration() {
    let out = switchyard()
        .args(["check", "-c"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml"))
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

#[test]
fn the_unbuilt_route_verb_says_so_instead_of_pretending() {
    let out = switchyard().args(["route", "list"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not yet available"));
    assert!(out.stdout.is_empty());
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
