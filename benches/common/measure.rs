//! What the load generators of `benches/` measure about the machine and their contenders
//! (CPU ticks from /proc, load, percentiles): one copy, included by `webhook_load.rs` and
//! `produce_floor.rs` (`#[path]`; this folder is not a bench target of its own).

/// CPU ticks (utime+stime, fields 14 and 15) of a process, all threads.
pub fn proc_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Machine busy (user+nice+system) and steal ticks from /proc/stat.
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let g = |i: usize| f.get(i).copied().unwrap_or(0);
    (g(0) + g(1) + g(2), g(7))
}

pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(f64::NAN)
}

pub struct Sample {
    pub procs: Vec<Option<u64>>,
    pub own: u64,
    pub machine: (u64, u64),
    pub load1: f64,
}

pub fn sample(pids: &[(String, String)]) -> Sample {
    Sample {
        procs: pids.iter().map(|(_, p)| proc_ticks(p)).collect(),
        own: proc_ticks("self").unwrap_or(0),
        machine: machine_ticks(),
        load1: load1(),
    }
}

pub fn clk_tck() -> f64 {
    // getconf CLK_TCK is 100 on every Linux this runs on; let the script override it.
    std::env::var("CLK_TCK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100.0)
}

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64
}
