//! A bounded output buffer, filled by a pump task and drained by one reader at a time.

use futures::Stream;
use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Most bytes buffered per stream before the agent stops reading the pipe.
pub const BUFFER_LIMIT: usize = 1024 * 1024;
/// Largest single read from the pipe (the buffer may exceed [`BUFFER_LIMIT`] by at
/// most this much).
pub const CHUNK: usize = 128 * 1024;
/// Largest message handed to a reader: chunks buffered while the reader was busy are
/// joined up to this size, so a writer's small writes do not each become a gRPC
/// message. Far below the clients' 4 MiB message limit.
pub const MESSAGE: usize = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    chunks: VecDeque<Vec<u8>>,
    len: usize,
    eof: bool,
}

/// One output stream of a process.
#[derive(Debug, Default)]
pub struct Output {
    state: Mutex<State>,
    data: Notify,
    space: Notify,
    reading: AtomicBool,
}

/// Something the pump reads from: a pipe or a pty master.
pub trait Source: Send + 'static {
    /// Reads up to `buf.len()` bytes; `Ok(0)` is the end.
    fn read<'a>(
        &'a mut self,
        buf: &'a mut [u8],
    ) -> impl std::future::Future<Output = std::io::Result<usize>> + Send + 'a;
}

impl Source for tokio::net::unix::pipe::Receiver {
    async fn read<'a>(&'a mut self, buf: &'a mut [u8]) -> std::io::Result<usize> {
        tokio::io::AsyncReadExt::read(self, buf).await
    }
}

impl Output {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the task moving bytes from `source` into this buffer until its end.
    pub fn pump<S: Source>(self: &Arc<Self>, mut source: S) {
        let out = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                out.wait_for_space().await;
                let n = source.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    out.lock().eof = true;
                    out.data.notify_waiters();
                    return;
                }
                // A copy of just the bytes read: a chunk holds no more memory than
                // it counts against the limit.
                out.push(buf[..n].to_vec());
            }
        });
    }

    fn push(&self, chunk: Vec<u8>) {
        let mut s = self.lock();
        s.len += chunk.len();
        s.chunks.push_back(chunk);
        drop(s);
        self.data.notify_waiters();
    }

    async fn wait_for_space(&self) {
        loop {
            let mut notified = pin!(self.space.notified());
            notified.as_mut().enable();
            if self.lock().len < BUFFER_LIMIT {
                return;
            }
            notified.await;
        }
    }

    /// The next bytes buffered, waiting for some: the buffered chunks in order, joined
    /// up to [`MESSAGE`] bytes (a longer chunk alone); `None` once the stream ended and
    /// everything was read.
    pub async fn next_chunk(&self) -> Option<Vec<u8>> {
        loop {
            let mut notified = pin!(self.data.notified());
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(first) = s.chunks.pop_front() {
                    let mut total = first.len();
                    let mut more = Vec::new();
                    while let Some(next) = s.chunks.front() {
                        if total + next.len() > MESSAGE {
                            break;
                        }
                        total += next.len();
                        more.extend(s.chunks.pop_front());
                    }
                    s.len -= total;
                    drop(s);
                    self.space.notify_waiters();
                    // Joined outside the lock: the pump keeps reading meanwhile.
                    return Some(join(first, more, total));
                }
                if s.eof {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Bytes buffered now.
    pub fn buffered(&self) -> usize {
        self.lock().len
    }

    /// The stream for one reader; `None` while another reader holds it.
    pub fn reader(self: &Arc<Self>) -> Option<impl Stream<Item = Vec<u8>> + Send + 'static> {
        if self.reading.swap(true, Ordering::AcqRel) {
            return None;
        }
        let guard = ReaderGuard(self.clone());
        Some(futures::stream::unfold(guard, |guard| async move {
            let chunk = guard.0.next_chunk().await?;
            Some((chunk, guard))
        }))
    }
}

/// `first` followed by `more`, `total` bytes in all.
fn join(first: Vec<u8>, more: Vec<Vec<u8>>, total: usize) -> Vec<u8> {
    if more.is_empty() {
        return first;
    }
    let mut out = first;
    out.reserve_exact(total - out.len());
    for chunk in more {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Lets the next reader in when the current one's stream is dropped.
struct ReaderGuard(Arc<Output>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.reading.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    fn pipe() -> (
        tokio::net::unix::pipe::Sender,
        tokio::net::unix::pipe::Receiver,
    ) {
        tokio::net::unix::pipe::pipe().unwrap()
    }

    #[tokio::test]
    async fn late_reader_gets_everything_and_writer_is_held_back() {
        let (mut tx, rx) = pipe();
        let out = Output::new();
        out.pump(rx);
        let total = 3 * BUFFER_LIMIT;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&data).await.unwrap();
        });
        // Nobody reads: the writer must stall with the buffer at its bound.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(!writer.is_finished(), "writer not held back");
        assert!(out.buffered() <= BUFFER_LIMIT + CHUNK);
        let mut got = Vec::new();
        let mut reader = Box::pin(out.reader().unwrap());
        assert!(out.reader().is_none(), "one reader at a time");
        while let Some(chunk) = reader.next().await {
            got.extend_from_slice(&chunk);
        }
        writer.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "bytes differ");
    }

    #[tokio::test]
    async fn a_second_reader_continues_where_the_first_stopped() {
        let (mut tx, rx) = pipe();
        let out = Output::new();
        out.pump(rx);
        tx.write_all(b"hello ").await.unwrap();
        {
            let mut r = Box::pin(out.reader().unwrap());
            assert_eq!(r.next().await.unwrap(), b"hello ");
        }
        tx.write_all(b"world").await.unwrap();
        drop(tx);
        let rest: Vec<u8> = out.reader().unwrap().concat().await;
        assert_eq!(rest, b"world");
    }

    #[tokio::test]
    async fn small_writes_are_joined_up_to_a_message() {
        let (mut tx, rx) = pipe();
        let out = Output::new();
        out.pump(rx);
        let piece = vec![7u8; 4096];
        let pieces = 2 * MESSAGE / piece.len();
        for _ in 0..pieces {
            tx.write_all(&piece).await.unwrap();
            // One read per write: let the pump take each piece on its own.
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        drop(tx);
        let messages: Vec<Vec<u8>> = out.reader().unwrap().collect().await;
        assert!(messages.iter().all(|m| m.len() <= MESSAGE));
        assert!(messages.len() < pieces, "{} messages", messages.len());
        let total: usize = messages.iter().map(Vec::len).sum();
        assert_eq!(total, pieces * piece.len());
    }
}
