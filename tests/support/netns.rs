//! A network namespace of the test's own, linked to the test's namespace by a veth pair that a
//! test can cut: a real network partition (packets dropped, no reset, no error) between a
//! process run inside it and everything outside. Needs root (the tests run as root) and
//! iproute2's `ip`; removed (with its link) when dropped.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace with one link out; addresses 10.213.x.y/30, private to the link.
pub struct Netns {
    name: String,
    /// The test's end of the link.
    outer: String,
    /// The test's address on the link: what the process inside connects to.
    pub outer_ip: Ipv4Addr,
    /// The address of the namespace's end: what the test connects to.
    pub inner_ip: Ipv4Addr,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run `ip` (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Netns {
    /// Creates the namespace and its link, both ends up.
    pub fn create() -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names have at most 15 bytes.
        let name = format!("sy{}n{n}", pid % 1_000_000);
        let outer = format!("sy{}o{n}", pid % 1_000_000);
        let inner = format!("sy{}i{n}", pid % 1_000_000);
        let (third, fourth) = ((pid % 250) as u8, (n % 60 * 4) as u8);
        let outer_ip = Ipv4Addr::new(10, 213, third, fourth + 1);
        let inner_ip = Ipv4Addr::new(10, 213, third, fourth + 2);
        ip(&["netns", "add", &name]);
        let ns = Netns {
            name,
            outer,
            outer_ip,
            inner_ip,
        };
        ip(&[
            "link", "add", &ns.outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &ns.name]);
        ip(&["addr", "add", &format!("{outer_ip}/30"), "dev", &ns.outer]);
        ip(&["link", "set", &ns.outer, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        inside(&["addr", "add", &format!("{inner_ip}/30"), "dev", &inner]);
        inside(&["link", "set", &inner, "up"]);
        inside(&["link", "set", "lo", "up"]);
        ns
    }

    /// A command that runs `program` inside the namespace (`ip netns exec`, which execs it: the
    /// child's PID is the program's).
    pub fn command(&self, program: &std::path::Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Sets sysctl `key` to `value` inside the namespace (the `net.*` ones are per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        ip(&[
            "netns",
            "exec",
            &self.name,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ]);
    }

    /// Cuts the link: from now on packets between the namespace and outside are dropped.
    pub fn cut(&self) {
        ip(&["link", "set", &self.outer, "down"]);
    }

    /// Restores the link.
    pub fn restore(&self) {
        ip(&["link", "set", &self.outer, "up"]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.outer])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
