//! The host side of Firecracker's hybrid vsock protocol.
//!
//! Connect to the device's unix socket, write `CONNECT <port>\n`; once the guest accepts,
//! the device answers `OK <host_port>\n` and the stream carries raw bytes. The reply is
//! read one byte at a time so not a byte of the guest's data is consumed with it.

use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest reply line accepted (`OK 4294967295\n` is 14 bytes).
const MAX_REPLY: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum HybridError {
    #[error("connect to {path}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vsock handshake i/o")]
    Io(#[from] std::io::Error),
    #[error("guest refused vsock port {0} (nothing listening yet)")]
    Refused(u32),
    #[error("malformed vsock handshake reply {0:?}")]
    Malformed(String),
}

/// Opens a stream to the guest's vsock `port` through the device socket at `uds`.
pub async fn connect(uds: &Path, port: u32) -> Result<UnixStream, HybridError> {
    let mut stream = UnixStream::connect(uds)
        .await
        .map_err(|source| HybridError::Connect {
            path: uds.display().to_string(),
            source,
        })?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    let mut line = Vec::with_capacity(MAX_REPLY);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(HybridError::Refused(port));
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
        if line.len() > MAX_REPLY {
            return Err(HybridError::Malformed(
                String::from_utf8_lossy(&line).into(),
            ));
        }
    }
    parse_ok(&line).ok_or_else(|| HybridError::Malformed(String::from_utf8_lossy(&line).into()))?;
    Ok(stream)
}

/// `OK <host_port>` → the host port.
fn parse_ok(line: &[u8]) -> Option<u32> {
    std::str::from_utf8(line)
        .ok()?
        .strip_prefix("OK ")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    #[test]
    fn ok_line_parsed() {
        assert_eq!(parse_ok(b"OK 1073741824"), Some(1073741824));
        assert_eq!(parse_ok(b"OK"), None);
        assert_eq!(parse_ok(b"NO 5"), None);
        assert_eq!(parse_ok(b"OK -1"), None);
    }

    /// A device that answers like ours, then sends data right behind the reply.
    async fn device(reply: &'static [u8]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 13];
            s.read_exact(&mut req).await.unwrap();
            assert_eq!(&req, b"CONNECT 1024\n");
            s.write_all(reply).await.unwrap();
        });
        (dir, path)
    }

    #[tokio::test]
    async fn handshake_leaves_guest_bytes_in_the_stream() {
        let (_d, path) = device(b"OK 99\nhello").await;
        let mut s = connect(&path, 1024).await.unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "hello");
    }

    #[tokio::test]
    async fn eof_before_reply_is_refused() {
        let (_d, path) = device(b"").await;
        assert!(matches!(
            connect(&path, 1024).await,
            Err(HybridError::Refused(1024))
        ));
    }

    #[tokio::test]
    async fn garbage_reply_is_malformed() {
        let (_d, path) = device(b"NOPE\n").await;
        assert!(matches!(
            connect(&path, 1024).await,
            Err(HybridError::Malformed(_))
        ));
        let (_d, path) = device(&[b'x'; 100]).await;
        assert!(matches!(
            connect(&path, 1024).await,
            Err(HybridError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn missing_socket_names_the_path() {
        let e = connect(Path::new("/nonexistent/v.sock"), 1)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/v.sock"));
    }
}
