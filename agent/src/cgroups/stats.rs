//! Container statistics from cgroup v2 files. A file that is missing (its controller is
//! not enabled) reads as zeros.

use cocoon_proto::agent::v1::{ContainerStats, CpuStats, IoStats, MemoryStats, PidsStats};
use std::path::Path;

/// Reads the statistics of the cgroup at `dir`.
pub fn read(dir: &Path) -> ContainerStats {
    let file = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (cpu, mem, events) = (file("cpu.stat"), file("memory.stat"), file("memory.events"));
    let (cpu, mem, events) = (keyed(&cpu), keyed(&mem), keyed(&events));
    let io = io_totals(&file("io.stat"));
    ContainerStats {
        cpu: Some(CpuStats {
            usage_usec: cpu("usage_usec"),
            user_usec: cpu("user_usec"),
            system_usec: cpu("system_usec"),
            nr_periods: cpu("nr_periods"),
            nr_throttled: cpu("nr_throttled"),
            throttled_usec: cpu("throttled_usec"),
        }),
        memory: Some(MemoryStats {
            usage_bytes: single(&file("memory.current")),
            limit_bytes: single(&file("memory.max")),
            anon_bytes: mem("anon"),
            file_bytes: mem("file"),
            inactive_file_bytes: mem("inactive_file"),
            oom_events: events("oom"),
            oom_kill_events: events("oom_kill"),
        }),
        pids: Some(PidsStats {
            current: single(&file("pids.current")),
            limit: single(&file("pids.max")),
        }),
        io: Some(io),
    }
}

/// The `oom_kill` count of `memory.events` in `dir`.
pub fn oom_kills(dir: &Path) -> u64 {
    keyed(&std::fs::read_to_string(dir.join("memory.events")).unwrap_or_default())("oom_kill")
}

/// A one-value file; "max" (no limit) and garbage read as 0.
pub fn single(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

/// A flat-keyed file (`key value` lines) as a lookup; missing keys read as 0.
pub fn keyed(text: &str) -> impl Fn(&str) -> u64 + '_ {
    move |key| {
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

/// `io.stat` (`MAJ:MIN rbytes=… wbytes=… rios=… wios=…` per device) summed over devices.
pub fn io_totals(text: &str) -> IoStats {
    let mut s = IoStats::default();
    for field in text.split_whitespace() {
        let Some((k, v)) = field.split_once('=') else {
            continue;
        };
        let v: u64 = v.parse().unwrap_or(0);
        match k {
            "rbytes" => s.read_bytes += v,
            "wbytes" => s.write_bytes += v,
            "rios" => s.read_ops += v,
            "wios" => s.write_ops += v,
            _ => {}
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_formats() {
        let cpu = "usage_usec 1200\nuser_usec 1000\nsystem_usec 200\nnr_periods 3\n";
        assert_eq!(keyed(cpu)("usage_usec"), 1200);
        assert_eq!(keyed(cpu)("system_usec"), 200);
        assert_eq!(keyed(cpu)("throttled_usec"), 0);
        assert_eq!(single("max\n"), 0);
        assert_eq!(single("4096\n"), 4096);
        let io = "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n\
                  8:16 rbytes=5 wbytes=5 rios=1 wios=1 dbytes=0 dios=0\n";
        let t = io_totals(io);
        assert_eq!(
            (t.read_bytes, t.write_bytes, t.read_ops, t.write_ops),
            (15, 25, 2, 3)
        );
        let events = "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(events)("oom_kill"), 1);
        assert_eq!(keyed(events)("oom"), 1);
    }

    #[test]
    fn missing_cgroup_reads_zero() {
        let s = read(Path::new("/nonexistent/cgroup"));
        assert_eq!(s.memory.unwrap().usage_bytes, 0);
        assert_eq!(oom_kills(Path::new("/nonexistent")), 0);
    }
}
