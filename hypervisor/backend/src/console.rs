//! The guest's serial console, as the VMM writes it to a file.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The most of the file's end that is read for a tail.
const TAIL_BYTES: u64 = 64 * 1024;

/// The last `lines` lines of the console file (empty if it is missing).
pub fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(TAIL_BYTES);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    let _ = file.take(TAIL_BYTES).read_to_end(&mut bytes);
    last_lines(&String::from_utf8_lossy(&bytes), lines)
}

/// The last `n` lines of `text`, carriage returns dropped.
pub fn last_lines(text: &str, n: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(n);
    all[from..]
        .iter()
        .map(|l| l.trim_end_matches('\r'))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The kernel's panic line, if the console shows one.
pub fn find_panic(text: &str) -> Option<String> {
    text.lines()
        .find(|l| l.contains("Kernel panic - not syncing"))
        .map(|l| l.trim_end_matches('\r').trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_of_short_and_long_text() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\r\nb\r\n", 5), "a\nb");
        assert_eq!(last_lines("", 3), "");
    }

    #[test]
    fn tail_reads_only_the_end_of_a_large_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut text = "x".repeat(200_000);
        text.push_str("\nlast line\n");
        std::fs::write(&p, text).unwrap();
        assert_eq!(tail(&p, 1), "last line");
        assert_eq!(tail(&dir.path().join("missing"), 5), "");
    }

    #[test]
    fn panic_line_found() {
        let c = "[    1.0] Run /init\r\n[    1.1] Kernel panic - not syncing: No working init found.\r\n";
        assert_eq!(
            find_panic(c).unwrap(),
            "[    1.1] Kernel panic - not syncing: No working init found."
        );
        assert!(find_panic("all good").is_none());
    }
}
