//! Reading CRI-format log files.
//!
//! Three layers, each usable alone: [`parse_line`] reads one line; [`Decoder`] turns a
//! byte stream into [`LogRecord`]s, joining `P` parts with the line that ends them; and
//! [`LogFile`] reads a file as it grows, like `tail -F`: it notices when the file at its
//! path is replaced (log rotation) or truncated, and carries on in the new one.

use chrono::{DateTime, FixedOffset, SecondsFormat};
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How long a follower waits before looking at a file again when it had nothing new.
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Parts of one line joined beyond this size are handed on as a record of their own (without
/// a newline), so that a container writing endless partial lines cannot exhaust memory.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A raw line longer than this is not a writer's; it is reported malformed and skipped.
pub const MAX_LINE_BYTES: usize = MAX_RECORD_BYTES + 256;

pub use super::Stream;

/// One line of the container's output, its parts joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When its first part was written.
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    /// The bytes, ending in `\n` where the line was complete.
    pub text: Vec<u8>,
}

impl LogRecord {
    /// The time as RFC 3339 with nanoseconds, the way the log writes it.
    pub fn timestamp(&self) -> String {
        self.time.to_rfc3339_opts(SecondsFormat::Nanos, true)
    }
}

/// One line of the file, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine<'a> {
    pub time: DateTime<FixedOffset>,
    pub stream: Stream,
    /// `P`: the line goes on in the next part of the same stream.
    pub partial: bool,
    pub text: &'a [u8],
}

/// Why a line is not a CRI log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no {0} field")]
    Missing(&'static str),
    #[error("timestamp {0:?} is not RFC 3339")]
    Timestamp(String),
    #[error("stream {0:?} is neither stdout nor stderr")]
    Stream(String),
    #[error("tag {0:?} is neither F nor P")]
    Tag(String),
    #[error("line longer than {MAX_LINE_BYTES} bytes")]
    TooLong,
}

/// A line that was skipped, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed log line: {error}: {excerpt:?}")]
pub struct MalformedLine {
    pub error: ParseError,
    /// The line's beginning, for the person reading the message.
    pub excerpt: String,
}

impl MalformedLine {
    fn new(error: ParseError, line: &[u8]) -> Self {
        MalformedLine {
            error,
            excerpt: excerpt(line),
        }
    }
}

/// What a reader hands on: a record, or a line it skipped.
pub type Entry = Result<LogRecord, MalformedLine>;

/// Parses one line, `<RFC3339Nano> <stdout|stderr> <F|P> <text>`; one trailing `\n` is
/// allowed. Tags after the first (`F:x`) are ignored, as kubelet does.
pub fn parse_line(line: &[u8]) -> Result<LogLine<'_>, ParseError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let (time, rest) = split_space(line).ok_or(ParseError::Missing("stream"))?;
    let time = std::str::from_utf8(time)
        .ok()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .ok_or_else(|| ParseError::Timestamp(excerpt(time)))?;
    let (stream, rest) = split_space(rest).ok_or(ParseError::Missing("tag"))?;
    let stream = match stream {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        other => return Err(ParseError::Stream(excerpt(other))),
    };
    // An empty line may come without the space after its tag.
    let (tags, text) = split_space(rest).unwrap_or((rest, b""));
    let partial = match tags.split(|&b| b == b':').next() {
        Some(b"F") => false,
        Some(b"P") => true,
        _ => return Err(ParseError::Tag(excerpt(tags))),
    };
    Ok(LogLine {
        time,
        stream,
        partial,
        text,
    })
}

fn split_space(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b' ')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 48;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        text + "…"
    } else {
        text
    }
}

/// Joins the `P` parts of each stream with the `F` line that ends them.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The unfinished record of stdout and of stderr.
    pending: [Option<LogRecord>; 2],
}

impl Assembler {
    /// Takes one line; returns a record when it completes one.
    pub fn push(&mut self, line: LogLine<'_>) -> Option<LogRecord> {
        let slot = &mut self.pending[line.stream.index()];
        let record = slot.get_or_insert_with(|| LogRecord {
            time: line.time,
            stream: line.stream,
            text: Vec::new(),
        });
        record.text.extend_from_slice(line.text);
        if !line.partial {
            record.text.push(b'\n');
            return slot.take();
        }
        if record.text.len() >= MAX_RECORD_BYTES {
            return slot.take();
        }
        None
    }

    /// Hands on the unfinished records (without a newline), oldest first.
    pub fn flush(&mut self) -> Vec<LogRecord> {
        let mut records: Vec<LogRecord> =
            self.pending.iter_mut().filter_map(Option::take).collect();
        records.sort_by_key(|r| r.time);
        records
    }
}

/// Turns the bytes of a CRI log, in chunks of any size, into entries.
#[derive(Debug, Default)]
pub struct Decoder {
    /// The bytes of the line not yet ended by `\n`.
    line: Vec<u8>,
    /// Inside an over-long line, skipping to its end.
    skipping: bool,
    assembler: Assembler,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes `bytes`, handing each finished entry to `sink`.
    pub fn feed(&mut self, mut bytes: &[u8], sink: &mut impl FnMut(Entry)) {
        while !bytes.is_empty() {
            let (chunk, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => (&bytes[..at], true),
                None => (bytes, false),
            };
            bytes = &bytes[(chunk.len() + usize::from(ended)).min(bytes.len())..];
            if !self.skipping {
                self.line.extend_from_slice(chunk);
                if self.line.len() > MAX_LINE_BYTES {
                    sink(Err(MalformedLine::new(ParseError::TooLong, &self.line)));
                    self.line = Vec::new();
                    self.skipping = true;
                }
            }
            if ended {
                if !self.skipping {
                    let line = std::mem::take(&mut self.line);
                    self.decode_line(&line, sink);
                }
                self.skipping = false;
            }
        }
    }

    /// The input ended: decodes a last line that has no `\n` and hands on unfinished records.
    pub fn finish(&mut self, sink: &mut impl FnMut(Entry)) {
        self.finish_line(sink);
        for record in self.assembler.flush() {
            sink(Ok(record));
        }
    }

    /// Decodes the unended line as if it were ended, keeping unfinished records.
    pub fn finish_line(&mut self, sink: &mut impl FnMut(Entry)) {
        if !self.line.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.line);
            self.decode_line(&line, sink);
        }
        self.forget_line();
    }

    /// Drops the unended line (the file it came from was truncated).
    pub fn forget_line(&mut self) {
        self.line.clear();
        self.skipping = false;
    }

    fn decode_line(&mut self, line: &[u8], sink: &mut impl FnMut(Entry)) {
        match parse_line(line) {
            Ok(parsed) => {
                if let Some(record) = self.assembler.push(parsed) {
                    sink(Ok(record));
                }
            }
            Err(error) => sink(Err(MalformedLine::new(error, line))),
        }
    }
}

/// A CRI log file read as it grows. Its path may not exist yet, and the file there may be
/// replaced (rotation) or truncated while it is read.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    open: Option<OpenFile>,
    decoder: Decoder,
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    id: (u64, u64),
    /// Bytes read so far.
    offset: u64,
}

fn file_id(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

impl LogFile {
    /// Opens the file at `path`, which must exist.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let mut log = Self::watch(path);
        log.open = Some(open(&log.path)?);
        Ok(log)
    }

    /// Reads the file at `path` once it exists.
    pub fn watch(path: impl Into<PathBuf>) -> Self {
        LogFile {
            path: path.into(),
            open: None,
            decoder: Decoder::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what the file holds now, without waiting for more, handing each finished entry
    /// to `sink`. Returns how many bytes it read: 0 means nothing new.
    pub fn read_available(&mut self, sink: &mut impl FnMut(Entry)) -> io::Result<u64> {
        let mut total = 0;
        loop {
            let Some(open_file) = &mut self.open else {
                match open(&self.path) {
                    Ok(file) => self.open = Some(file),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(total),
                    Err(e) => return Err(e),
                }
                continue;
            };
            total += read_to_end(open_file, &mut self.decoder, sink)?;
            // At the end of what the open file holds: is it still the file at the path?
            match std::fs::metadata(&self.path) {
                Ok(meta) if file_id(&meta) != open_file.id => {
                    tracing::debug!(path = %self.path.display(), "log file replaced; reopening");
                    // Whatever the old file still held has been read; a line it left
                    // unended will not be ended there any more.
                    total += read_to_end(open_file, &mut self.decoder, sink)?;
                    self.decoder.finish_line(sink);
                    self.open = None;
                }
                Ok(meta) if meta.len() < open_file.offset => {
                    tracing::debug!(path = %self.path.display(), "log file truncated");
                    open_file.file.seek(SeekFrom::Start(0))?;
                    open_file.offset = 0;
                    self.decoder.forget_line();
                }
                // Unchanged, or moved away with no new file yet: keep the one we have.
                Ok(_) => return Ok(total),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }

    /// No more will be written: hands on a last unended line and unfinished records.
    pub fn finish(&mut self, sink: &mut impl FnMut(Entry)) {
        self.decoder.finish(sink);
    }
}

fn open(path: &Path) -> io::Result<OpenFile> {
    let file = File::open(path)?;
    let id = file_id(&file.metadata()?);
    Ok(OpenFile {
        file,
        id,
        offset: 0,
    })
}

fn read_to_end(
    open: &mut OpenFile,
    decoder: &mut Decoder,
    sink: &mut impl FnMut(Entry),
) -> io::Result<u64> {
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0;
    loop {
        let n = match open.file.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        open.offset += n as u64;
        total += n as u64;
        decoder.feed(&buf[..n], sink);
    }
}

/// Reads a whole log file that is no longer written.
pub fn read_file(path: &Path, sink: &mut impl FnMut(Entry)) -> io::Result<()> {
    let mut log = LogFile::open(path)?;
    log.read_available(sink)?;
    log.finish(sink);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    /// Encodes what a container wrote the way a CRI log writer does: one `F` line per `\n`,
    /// longer lines cut into `P` parts of at most `max` bytes, a last unended piece as `P`.
    fn encode(writes: &[(Stream, Vec<u8>)], max: usize, out: &mut Vec<u8>) {
        let mut nanos = 0;
        for (stream, bytes) in writes {
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let end = rest.iter().position(|&b| b == b'\n');
                let line_len = end.unwrap_or(rest.len());
                let take = line_len.min(max);
                let partial = take < line_len || end.is_none();
                nanos += 1;
                write!(
                    out,
                    "2024-05-06T07:08:09.{nanos:09}Z {} {} ",
                    stream.as_str(),
                    if partial { "P" } else { "F" }
                )
                .unwrap();
                out.extend_from_slice(&rest[..take]);
                out.push(b'\n');
                rest = &rest[take + usize::from(!partial)..];
            }
        }
    }

    fn decode_all(bytes: &[u8], chunk: usize) -> (Vec<LogRecord>, Vec<MalformedLine>) {
        let (mut records, mut bad) = (Vec::new(), Vec::new());
        let mut sink = |e: Entry| match e {
            Ok(r) => records.push(r),
            Err(m) => bad.push(m),
        };
        let mut decoder = Decoder::new();
        for piece in bytes.chunks(chunk.max(1)) {
            decoder.feed(piece, &mut sink);
        }
        decoder.finish(&mut sink);
        (records, bad)
    }

    fn joined(records: &[LogRecord], stream: Stream) -> Vec<u8> {
        records
            .iter()
            .filter(|r| r.stream == stream)
            .flat_map(|r| r.text.iter().copied())
            .collect()
    }

    #[test]
    fn parses_full_and_partial_lines() {
        let line = parse_line(b"2016-10-06T00:17:09.669794202Z stdout F hello world\n").unwrap();
        assert_eq!(line.stream, Stream::Stdout);
        assert!(!line.partial);
        assert_eq!(line.text, b"hello world");
        assert_eq!(line.time.timestamp_subsec_nanos(), 669_794_202);

        let line = parse_line(b"2016-10-06T00:17:09.6+02:00 stderr P  two  spaces").unwrap();
        assert_eq!(line.stream, Stream::Stderr);
        assert!(line.partial);
        assert_eq!(line.text, b" two  spaces");

        let empty = parse_line(b"2016-10-06T00:17:09Z stdout F ").unwrap();
        assert_eq!(empty.text, b"");
        let bare = parse_line(b"2016-10-06T00:17:09Z stdout F").unwrap();
        assert_eq!(bare.text, b"");
        let tagged = parse_line(b"2016-10-06T00:17:09Z stdout F:x y").unwrap();
        assert_eq!(tagged.text, b"y");
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let cases: [(&[u8], ParseError); 5] = [
            (b"", ParseError::Missing("stream")),
            (
                b"yesterday stdout F x",
                ParseError::Timestamp("yesterday".into()),
            ),
            (b"2016-10-06T00:17:09Z", ParseError::Missing("stream")),
            (
                b"2016-10-06T00:17:09Z stdin F x",
                ParseError::Stream("stdin".into()),
            ),
            (
                b"2016-10-06T00:17:09Z stdout X x",
                ParseError::Tag("X".into()),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_line(line).unwrap_err(), expected, "{line:?}");
        }
        let message =
            MalformedLine::new(ParseError::Tag("X".into()), b"2016 stdout X x").to_string();
        assert!(
            message.contains("tag \"X\" is neither F nor P"),
            "{message}"
        );
    }

    #[test]
    fn parts_join_per_stream_and_bad_lines_are_skipped() {
        let log = b"2024-01-01T00:00:00.1Z stdout P hel\n\
                    2024-01-01T00:00:00.2Z stderr F oops\n\
                    garbage\n\
                    2024-01-01T00:00:00.3Z stdout F lo\n";
        let (records, bad) = decode_all(log, 7);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].excerpt, "garbage");
        assert_eq!(records.len(), 2);
        assert_eq!(
            (records[0].stream, &records[0].text[..]),
            (Stream::Stderr, &b"oops\n"[..])
        );
        assert_eq!(
            (records[1].stream, &records[1].text[..]),
            (Stream::Stdout, &b"hello\n"[..])
        );
        assert_eq!(records[1].timestamp(), "2024-01-01T00:00:00.100000000Z");
    }

    #[test]
    fn an_unended_last_line_and_unfinished_parts_come_out_at_the_end() {
        let (records, bad) = decode_all(
            b"2024-01-01T00:00:00Z stdout P abc\n2024-01-01T00:00:01Z stderr F no newline",
            64,
        );
        assert!(bad.is_empty());
        let texts: Vec<_> = records.iter().map(|r| r.text.clone()).collect();
        assert_eq!(texts, [b"no newline\n".to_vec(), b"abc".to_vec()]);
    }

    #[test]
    fn over_long_lines_are_skipped_and_endless_parts_are_cut() {
        let mut log = b"2024-01-01T00:00:00Z stdout F ".to_vec();
        log.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        log.extend_from_slice(b"\n2024-01-01T00:00:00Z stdout F ok\n");
        let (records, bad) = decode_all(&log, 4096);
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].error, ParseError::TooLong);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].text, b"ok\n");

        let part = vec![b'y'; 200 * 1024];
        let mut log = Vec::new();
        encode(&[(Stream::Stdout, part.repeat(8))], part.len(), &mut log);
        let (records, _) = decode_all(&log, 1 << 16);
        assert!(records.len() >= 2, "{} records", records.len());
        assert!(records
            .iter()
            .all(|r| r.text.len() <= MAX_RECORD_BYTES + part.len()));
        assert_eq!(joined(&records, Stream::Stdout), part.repeat(8));
    }

    #[test]
    fn follows_a_growing_file_through_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = LogFile::watch(&path);
        let mut got = Vec::new();
        let mut sink = |e: Entry| got.push(e.unwrap().text);
        assert_eq!(log.read_available(&mut sink).unwrap(), 0, "no file yet");

        let mut file = File::create(&path).unwrap();
        file.write_all(b"2024-01-01T00:00:00Z stdout F one\n2024-01-01T00:00:00Z stdout F tw")
            .unwrap();
        log.read_available(&mut sink).unwrap();
        file.write_all(b"o\n2024-01-01T00:00:00Z stdout P thr")
            .unwrap();
        log.read_available(&mut sink).unwrap();

        // Rotation: the old file moves away, a new one takes its path.
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        file.write_all(b"ee-\n").unwrap();
        let mut file = File::create(&path).unwrap();
        file.write_all(b"2024-01-01T00:00:01Z stdout F four\n")
            .unwrap();
        log.read_available(&mut sink).unwrap();

        // Truncation in place, noticed before the file grows back.
        file.set_len(0).unwrap();
        log.read_available(&mut sink).unwrap();
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(b"2024-01-01T00:00:02Z stdout F five\n")
            .unwrap();
        log.read_available(&mut sink).unwrap();
        log.finish(&mut sink);
        let texts: Vec<_> = got.iter().map(|t| String::from_utf8_lossy(t)).collect();
        assert_eq!(texts, ["one\n", "two\n", "three-four\n", "five\n"]);
    }

    #[test]
    fn read_file_reads_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, b"2024-01-01T00:00:00Z stderr F a\nbad\n").unwrap();
        let mut entries = Vec::new();
        read_file(&path, &mut |e| entries.push(e)).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].as_ref().unwrap().text, b"a\n");
        assert!(entries[1].is_err());
        let missing = read_file(&dir.path().join("nope"), &mut |_| {}).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
    }

    fn writes() -> impl Strategy<Value = Vec<(Stream, Vec<u8>)>> {
        let stream = prop_oneof![Just(Stream::Stdout), Just(Stream::Stderr)];
        let bytes = prop::collection::vec(
            prop_oneof![3 => any::<u8>(), 1 => Just(b'\n'), 1 => Just(b' ')],
            0..64,
        );
        prop::collection::vec((stream, bytes), 0..12)
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), chunk in 1usize..64) {
            let _ = parse_line(&bytes);
            let (records, _) = decode_all(&bytes, chunk);
            for r in records {
                prop_assert!(r.text.len() <= MAX_RECORD_BYTES + MAX_LINE_BYTES);
            }
        }

        #[test]
        fn arbitrary_lines_after_a_valid_prefix_never_panic(
            tail in prop::collection::vec(any::<u8>(), 0..128),
            tag in "[FPX:]{0,3}",
            stream in "std(out|err|in)",
        ) {
            let mut line = format!("2024-01-01T00:00:00Z {stream} {tag} ").into_bytes();
            line.extend(tail);
            let _ = decode_all(&line, 5);
        }

        #[test]
        fn writer_shaped_input_round_trips(writes in writes(), max in 1usize..16, chunk in 1usize..97) {
            let mut log = Vec::new();
            encode(&writes, max, &mut log);
            let (records, bad) = decode_all(&log, chunk);
            prop_assert!(bad.is_empty(), "{:?}", bad);
            for stream in [Stream::Stdout, Stream::Stderr] {
                let written: Vec<u8> = writes
                    .iter()
                    .filter(|(s, _)| *s == stream)
                    .flat_map(|(_, b)| b.iter().copied())
                    .collect();
                prop_assert_eq!(joined(&records, stream), written);
            }
            for r in &records {
                let newlines = r.text.iter().filter(|&&b| b == b'\n').count();
                prop_assert!(newlines <= 1 && (newlines == 0 || r.text.ends_with(b"\n")));
            }
        }
    }
}
