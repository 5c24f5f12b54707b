//! Writing CRI-format log files: each stream's bytes are cut into lines; a line gets
//! `F`, a piece of a line longer than [`MAX_LINE`] (or a last line without newline
//! when the stream ends) gets `F` at the end and `P` before. Both streams of a container
//! share one file; [`LogFile::reopen`] follows kubelet's rotation (the old file was
//! renamed; a new one is created at the same path).

use chrono::{SecondsFormat, Utc};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The longest line written whole; longer ones are split into `P` parts (containerd and
/// CRI-O use the same 16 KiB bound).
pub const MAX_LINE: usize = 16 * 1024;

pub use super::Stream;

/// A container's log file, shared by its stream copiers.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    /// Opens (creating, appending) the file at `path`; its directory must exist.
    pub fn open(path: &Path) -> std::io::Result<LogFile> {
        Ok(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open_append(path)?),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the path anew: after a rotation, writes go to the new file.
    pub fn reopen(&self) -> std::io::Result<()> {
        let new = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = new;
        Ok(())
    }

    fn write(&self, data: &[u8]) -> std::io::Result<()> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(data)
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Cuts one stream's bytes into CRI log lines.
#[derive(Debug)]
pub struct LineWriter {
    stream: Stream,
    partial: Vec<u8>,
}

impl LineWriter {
    pub fn new(stream: Stream) -> LineWriter {
        LineWriter {
            stream,
            partial: Vec::new(),
        }
    }

    /// Adds `data`; writes every completed line (and over-long parts) to `log`.
    pub fn push(&mut self, data: &[u8], log: &LogFile) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.encode(data, &timestamp(), &mut out);
        if out.is_empty() {
            return Ok(());
        }
        log.write(&out)
    }

    /// The stream ended: a last line without newline is written as a full line.
    pub fn finish(&mut self, log: &LogFile) -> std::io::Result<()> {
        let mut out = Vec::new();
        self.flush_partial(&timestamp(), &mut out);
        if out.is_empty() {
            return Ok(());
        }
        log.write(&out)
    }

    fn encode(&mut self, mut data: &[u8], ts: &str, out: &mut Vec<u8>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) if self.partial.len() + i <= MAX_LINE => {
                    self.partial.extend_from_slice(&data[..i]);
                    line(out, ts, self.stream, 'F', &self.partial);
                    self.partial.clear();
                    data = &data[i + 1..];
                }
                _ => {
                    let room = MAX_LINE - self.partial.len();
                    let take = data.len().min(room);
                    self.partial.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.partial.len() == MAX_LINE {
                        line(out, ts, self.stream, 'P', &self.partial);
                        self.partial.clear();
                    }
                }
            }
        }
    }

    fn flush_partial(&mut self, ts: &str, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            line(out, ts, self.stream, 'F', &self.partial);
            self.partial.clear();
        }
    }
}

fn line(out: &mut Vec<u8>, ts: &str, stream: Stream, tag: char, text: &[u8]) {
    out.extend_from_slice(ts.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.as_str().as_bytes());
    out.push(b' ');
    out.push(tag as u8);
    out.push(b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
}

/// Now, as RFC 3339 with nanoseconds in UTC.
pub fn timestamp() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[&[u8]], finish: bool) -> String {
        let mut w = LineWriter::new(Stream::Stderr);
        let mut out = Vec::new();
        for c in chunks {
            w.encode(c, "T", &mut out);
        }
        if finish {
            w.flush_partial("T", &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_across_chunks() {
        assert_eq!(
            encode(&[b"he", b"llo\nwor", b"ld\n\n"], false),
            "T stderr F hello\nT stderr F world\nT stderr F \n"
        );
    }

    #[test]
    fn last_line_without_newline_is_written_at_the_end_only() {
        assert_eq!(encode(&[b"a\nb"], false), "T stderr F a\n");
        assert_eq!(encode(&[b"a\nb"], true), "T stderr F a\nT stderr F b\n");
    }

    #[test]
    fn long_lines_are_split_into_parts() {
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let mut data = long.clone();
        data.push(b'\n');
        let s = encode(&[&data], false);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("T stderr P "));
        assert!(lines[1].starts_with("T stderr P "));
        assert_eq!(lines[2], "T stderr F xxxxx");
        let total: usize = lines.iter().map(|l| l.len() - "T stderr P ".len()).sum();
        assert_eq!(total, long.len());
    }

    #[test]
    fn reopen_follows_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.log");
        let log = LogFile::open(&path).unwrap();
        let mut w = LineWriter::new(Stream::Stdout);
        w.push(b"one\n", &log).unwrap();
        std::fs::rename(&path, tmp.path().join("c.log.1")).unwrap();
        log.reopen().unwrap();
        w.push(b"two\n", &log).unwrap();
        let old = std::fs::read_to_string(tmp.path().join("c.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.ends_with(" stdout F one\n"), "{old}");
        assert!(new.ends_with(" stdout F two\n"), "{new}");
        assert!(!new.contains("one"));
    }
}
