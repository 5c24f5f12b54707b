//! A host client that has connected to the hybrid socket and not yet finished its
//! `CONNECT` line.

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use super::handshake::{HandshakeError, LineParser};

/// What a pending client's bytes amounted to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientStep {
    /// The line is not complete yet.
    Pending,
    /// A complete `CONNECT <port>` line.
    Connect(u32),
    /// EOF, an error, or a malformed line: close the client.
    Close(&'static str),
}

pub(crate) struct PendingClient {
    pub(crate) stream: UnixStream,
    parser: LineParser,
    pub(crate) deadline: Instant,
}

impl PendingClient {
    pub(crate) fn new(stream: UnixStream, deadline: Instant) -> Self {
        PendingClient {
            stream,
            parser: LineParser::default(),
            deadline,
        }
    }

    /// Reads the line one byte at a time, never past its newline.
    pub(crate) fn on_readable(&mut self) -> ClientStep {
        let mut byte = [0u8; 1];
        loop {
            match self.stream.read(&mut byte) {
                Ok(0) => return ClientStep::Close("eof before CONNECT line"),
                Ok(_) => match self.parser.push(byte[0]) {
                    Ok(None) => continue,
                    Ok(Some(port)) => return ClientStep::Connect(port),
                    Err(HandshakeError::TooLong) => {
                        return ClientStep::Close("CONNECT line too long")
                    }
                    Err(HandshakeError::BadCommand) => {
                        return ClientStep::Close("not a CONNECT line")
                    }
                    Err(HandshakeError::BadPort) => {
                        return ClientStep::Close("bad port in CONNECT line")
                    }
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => return ClientStep::Pending,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return ClientStep::Close("read error"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn stops_at_newline() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = PendingClient::new(b, Instant::now());
        a.write_all(b"CONN").unwrap();
        assert_eq!(c.on_readable(), ClientStep::Pending);
        a.write_all(b"ECT 5\nrest").unwrap();
        assert_eq!(c.on_readable(), ClientStep::Connect(5));
        let mut rest = [0u8; 4];
        c.stream.read_exact(&mut rest).unwrap();
        assert_eq!(&rest, b"rest");
    }

    #[test]
    fn closes_on_garbage_and_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = PendingClient::new(b, Instant::now());
        a.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        assert!(matches!(c.on_readable(), ClientStep::Close(_)));

        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut c = PendingClient::new(b, Instant::now());
        drop(a);
        assert!(matches!(c.on_readable(), ClientStep::Close(_)));
    }
}
