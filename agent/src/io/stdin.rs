//! A process's stdin as the agent holds it: a pipe's write end or the terminal.

use super::tty::Tty;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

/// End of transmission: what a terminal's line discipline turns into EOF.
const EOT: u8 = 0x04;

#[derive(Debug)]
enum Sink {
    Pipe(pipe::Sender),
    Tty(Arc<Tty>),
}

/// The write side of a process's stdin; closed once, for good.
#[derive(Debug)]
pub struct Stdin {
    sink: Mutex<Option<Sink>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StdinError {
    #[error("stdin is closed")]
    Closed,
    #[error("write stdin")]
    Write(#[from] std::io::Error),
}

impl Stdin {
    pub fn pipe(tx: pipe::Sender) -> Self {
        Self {
            sink: Mutex::new(Some(Sink::Pipe(tx))),
        }
    }

    pub fn tty(tty: Arc<Tty>) -> Self {
        Self {
            sink: Mutex::new(Some(Sink::Tty(tty))),
        }
    }

    /// A process without stdin (it reads /dev/null).
    pub fn none() -> Self {
        Self {
            sink: Mutex::new(None),
        }
    }

    /// Holds stdin for one writer: concurrent writers queue up.
    pub async fn lock(&self) -> StdinWriter<'_> {
        StdinWriter(self.sink.lock().await)
    }
}

pub struct StdinWriter<'a>(tokio::sync::MutexGuard<'a, Option<Sink>>);

impl StdinWriter<'_> {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), StdinError> {
        match self.0.as_mut() {
            None => Err(StdinError::Closed),
            Some(Sink::Pipe(tx)) => Ok(tx.write_all(data).await?),
            Some(Sink::Tty(tty)) => Ok(tty.write_all(data).await?),
        }
    }

    /// Closes stdin: the pipe's reader sees EOF; a terminal gets EOT (EOF for a reader
    /// in canonical mode at the start of a line).
    pub async fn close(&mut self) -> Result<(), StdinError> {
        match self.0.take() {
            None => Err(StdinError::Closed),
            Some(Sink::Pipe(tx)) => {
                drop(tx);
                Ok(())
            }
            Some(Sink::Tty(tty)) => Ok(tty.write_all(&[EOT]).await?),
        }
    }
}
