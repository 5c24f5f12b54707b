//! Tables and the short forms people read: ids, sizes, ages, states.

use k8s_cri::v1::{ContainerState, PodSandboxState};
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How many characters of an id a table shows.
pub const SHORT_ID_LEN: usize = 13;

/// Columns padded to their widest cell, three spaces apart; the last column unpadded.
#[derive(Debug, Clone)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn write(&self, out: &mut impl Write) -> io::Result<()> {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let pad = widths[i] - cell.chars().count();
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad + 3));
                }
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// The first [`SHORT_ID_LEN`] characters of an id, without a `sha256:` prefix.
pub fn short_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    match id.char_indices().nth(SHORT_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// Bytes in decimal units with three significant digits, as `docker images` shows them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 1000 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 999.5 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    let digits = if value < 9.995 {
        2
    } else if value < 99.95 {
        1
    } else {
        0
    };
    format!("{value:.digits$}{}", UNITS[unit])
}

/// How long ago a CRI timestamp (nanoseconds since the epoch) was, in words.
pub fn ago(created_ns: i64, now: SystemTime) -> String {
    let Ok(created_ns) = u64::try_from(created_ns) else {
        return "unknown".into();
    };
    let created = UNIX_EPOCH + Duration::from_nanos(created_ns);
    let Ok(elapsed) = now.duration_since(created) else {
        return "just now".into();
    };
    let s = elapsed.as_secs();
    let (n, unit) = match s {
        0 => return "just now".into(),
        1..=59 => (s, "second"),
        60..=3599 => (s / 60, "minute"),
        3600..=86_399 => (s / 3600, "hour"),
        86_400..=1_209_599 => (s / 86_400, "day"),
        1_209_600..=5_183_999 => (s / 604_800, "week"),
        5_184_000..=63_071_999 => (s / 2_592_000, "month"),
        _ => (s / 31_536_000, "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    format!("{n} {unit}{plural} ago")
}

pub fn container_state(state: i32) -> &'static str {
    match ContainerState::try_from(state) {
        Ok(ContainerState::ContainerCreated) => "Created",
        Ok(ContainerState::ContainerRunning) => "Running",
        Ok(ContainerState::ContainerExited) => "Exited",
        Ok(ContainerState::ContainerUnknown) | Err(_) => "Unknown",
    }
}

pub fn pod_state(state: i32) -> &'static str {
    match PodSandboxState::try_from(state) {
        Ok(PodSandboxState::SandboxReady) => "Ready",
        Ok(PodSandboxState::SandboxNotready) => "NotReady",
        Err(_) => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let mut table = Table::new(&["ID", "NAME", "STATE"]);
        table.row(vec!["abc".into(), "a-long-name".into(), "Running".into()]);
        table.row(vec!["abcdef".into(), "x".into(), "".into()]);
        let mut out = Vec::new();
        table.write(&mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID       NAME          STATE\n\
             abc      a-long-name   Running\n\
             abcdef   x\n"
        );
    }

    #[test]
    fn ids_are_shortened_without_their_algorithm() {
        assert_eq!(short_id("sha256:0123456789abcdef0123"), "0123456789abc");
        assert_eq!(short_id("0123456789abcdef"), "0123456789abc");
        assert_eq!(short_id("abc"), "abc");
    }

    #[test]
    fn sizes_have_three_significant_digits() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1.00kB");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(72_800_000), "72.8MB");
        assert_eq!(human_size(999_999), "1.00MB");
        assert_eq!(human_size(123_456_789_012), "123GB");
        assert_eq!(human_size(u64::MAX), "18.4EB");
    }

    #[test]
    fn ages_read_like_words() {
        let now = UNIX_EPOCH + Duration::from_secs(10_000_000);
        let ns = |secs_ago: u64| ((10_000_000 - secs_ago) * 1_000_000_000) as i64;
        assert_eq!(ago(ns(0), now), "just now");
        assert_eq!(ago(ns(1), now), "1 second ago");
        assert_eq!(ago(ns(125), now), "2 minutes ago");
        assert_eq!(ago(ns(3 * 3600), now), "3 hours ago");
        assert_eq!(ago(ns(86_400), now), "1 day ago");
        assert_eq!(ago(ns(3 * 604_800), now), "3 weeks ago");
        assert_eq!(ago(-1, now), "unknown");
        assert_eq!(ago(ns(0) + 5_000_000_000, now), "just now");
    }

    #[test]
    fn states_are_words() {
        assert_eq!(
            container_state(ContainerState::ContainerRunning as i32),
            "Running"
        );
        assert_eq!(container_state(99), "Unknown");
        assert_eq!(
            pod_state(PodSandboxState::SandboxNotready as i32),
            "NotReady"
        );
    }
}
