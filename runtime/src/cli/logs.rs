//! `cocoon logs`: a container's output, read from its CRI log file.

use super::error::{Error, RpcResult};
use super::resolve;
use crate::cri_client::CriClient;
use crate::cri_log::reader::{self, Entry, LogFile, LogRecord, Stream};
use k8s_cri::v1::{ContainerState, ContainerStatus, ContainerStatusRequest};
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Print a container's output: its stdout to stdout, its stderr to stderr.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Keep printing what the container writes until it exits.
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Start each line with the time it was written.
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Container id, unique id prefix or name.
    pub container: String,
}

/// Where a container's output goes.
pub struct Printer<'w, O: Write, E: Write> {
    pub out: &'w mut O,
    pub err: &'w mut E,
    pub timestamps: bool,
}

impl<O: Write, E: Write> Printer<'_, O, E> {
    pub fn print(&mut self, record: &LogRecord) -> std::io::Result<()> {
        let to: &mut dyn Write = match record.stream {
            Stream::Stdout => &mut *self.out,
            Stream::Stderr => &mut *self.err,
        };
        if self.timestamps {
            write!(to, "{} ", record.timestamp())?;
        }
        to.write_all(&record.text)
    }

    pub fn print_all(&mut self, entries: impl IntoIterator<Item = Entry>) -> std::io::Result<()> {
        let mut any = false;
        for entry in entries {
            match entry {
                Ok(record) => {
                    self.print(&record)?;
                    any = true;
                }
                Err(malformed) => tracing::warn!("{malformed}"),
            }
        }
        if any {
            self.out.flush()?;
            self.err.flush()?;
        }
        Ok(())
    }
}

pub async fn logs(
    client: &mut CriClient,
    args: &LogsArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), Error> {
    let container = resolve::find_container(client, &args.container).await?;
    let status = container_status(client, &container.id).await?;
    let path = log_path(&status)?;
    let mut printer = Printer {
        out,
        err,
        timestamps: args.timestamps,
    };
    // A follower may come before the file does; a reader of what was written may not.
    let mut log = if args.follow {
        LogFile::watch(&path)
    } else {
        LogFile::open(&path).map_err(|source| Error::Log {
            path: path.clone(),
            source,
        })?
    };
    // What is there now, cut to the tail.
    let mut tail = Tail::new(args.tail);
    log.read_available(&mut |e| tail.push(e))
        .map_err(|source| log_error(&log, source))?;
    let exited = status.state == ContainerState::ContainerExited as i32;
    if !args.follow || exited {
        log.finish(&mut |e| tail.push(e));
        printer.print_all(tail.entries)?;
        return Ok(());
    }
    printer.print_all(tail.entries)?;
    follow(client, &container.id, &mut log, &mut printer).await?;
    Ok(())
}

/// Keeps the last `n` records (all when `n` is `None`); malformed lines pass through.
struct Tail {
    n: Option<usize>,
    entries: VecDeque<Entry>,
    records: usize,
}

impl Tail {
    fn new(n: Option<usize>) -> Self {
        Tail {
            n,
            entries: VecDeque::new(),
            records: 0,
        }
    }

    fn push(&mut self, entry: Entry) {
        let Some(n) = self.n else {
            self.entries.push_back(entry);
            return;
        };
        if entry.is_err() {
            // A warning about a line not shown is noise.
            return;
        }
        self.entries.push_back(entry);
        self.records += 1;
        while self.records > n {
            if self.entries.pop_front().is_some_and(|e| e.is_ok()) {
                self.records -= 1;
            }
        }
    }
}

pub async fn container_status(
    client: &mut CriClient,
    container_id: &str,
) -> Result<ContainerStatus, Error> {
    let request = ContainerStatusRequest {
        container_id: container_id.to_string(),
        verbose: false,
    };
    client
        .runtime
        .container_status(request)
        .await
        .rpc("container status")?
        .status
        .ok_or_else(|| Error::Refused(format!("cocoond has no status for {container_id}")))
}

pub fn log_path(status: &ContainerStatus) -> Result<PathBuf, Error> {
    if status.log_path.is_empty() {
        return Err(Error::Refused(format!(
            "container {} has no log file",
            status.id
        )));
    }
    Ok(PathBuf::from(&status.log_path))
}

fn log_error(log: &LogFile, source: std::io::Error) -> Error {
    Error::Log {
        path: log.path().to_path_buf(),
        source,
    }
}

/// How often a follower asks whether the container is still running.
const STATUS_INTERVAL: Duration = Duration::from_millis(100);

/// The longest a follower keeps reading after the container exited, while the log still
/// grows.
const DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// Prints what the container writes until it exits, then what the log still holds; returns
/// its final status.
pub async fn follow<O: Write, E: Write>(
    client: &mut CriClient,
    container_id: &str,
    log: &mut LogFile,
    printer: &mut Printer<'_, O, E>,
) -> Result<ContainerStatus, Error> {
    let mut last_status: Option<Instant> = None;
    loop {
        let read = read_and_print(log, printer)?;
        if last_status.is_none_or(|t| t.elapsed() >= STATUS_INTERVAL) {
            last_status = Some(Instant::now());
            let status = container_status(client, container_id).await?;
            if status.state == ContainerState::ContainerExited as i32 {
                drain(log, printer).await?;
                return Ok(status);
            }
        }
        if read == 0 {
            tokio::time::sleep(reader::POLL_INTERVAL).await;
        }
    }
}

/// Reads until the log stops growing (cocoond may still be writing what the container
/// wrote last, so it waits one poll interval at least), then ends it.
async fn drain<O: Write, E: Write>(
    log: &mut LogFile,
    printer: &mut Printer<'_, O, E>,
) -> Result<(), Error> {
    let started = Instant::now();
    loop {
        tokio::time::sleep(reader::POLL_INTERVAL).await;
        if read_and_print(log, printer)? == 0 || started.elapsed() >= DRAIN_LIMIT {
            break;
        }
    }
    let mut entries = Vec::new();
    log.finish(&mut |e| entries.push(e));
    printer.print_all(entries)?;
    Ok(())
}

fn read_and_print<O: Write, E: Write>(
    log: &mut LogFile,
    printer: &mut Printer<'_, O, E>,
) -> Result<u64, Error> {
    let mut entries = Vec::new();
    let read = log
        .read_available(&mut |e| entries.push(e))
        .map_err(|source| log_error(log, source))?;
    printer.print_all(entries)?;
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn record(stream: Stream, text: &str) -> Entry {
        Ok(LogRecord {
            time: DateTime::parse_from_rfc3339("2024-01-02T03:04:05.5Z").unwrap(),
            stream,
            text: text.as_bytes().to_vec(),
        })
    }

    #[test]
    fn streams_go_to_their_own_writer() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut printer = Printer {
            out: &mut out,
            err: &mut err,
            timestamps: true,
        };
        printer
            .print_all([record(Stream::Stdout, "a\n"), record(Stream::Stderr, "b")])
            .unwrap();
        assert_eq!(out, b"2024-01-02T03:04:05.500000000Z a\n");
        assert_eq!(err, b"2024-01-02T03:04:05.500000000Z b");
    }

    #[test]
    fn tail_keeps_the_last_records() {
        let mut tail = Tail::new(Some(2));
        for text in ["1\n", "2\n", "3\n"] {
            tail.push(record(Stream::Stdout, text));
        }
        let texts: Vec<_> = tail
            .entries
            .iter()
            .map(|e| e.as_ref().unwrap().text.clone())
            .collect();
        assert_eq!(texts, [b"2\n".to_vec(), b"3\n".to_vec()]);

        let mut none = Tail::new(Some(0));
        none.push(record(Stream::Stdout, "x\n"));
        assert!(none.entries.is_empty());

        let mut all = Tail::new(None);
        for _ in 0..5 {
            all.push(record(Stream::Stderr, "y\n"));
        }
        assert_eq!(all.entries.len(), 5);
    }
}
