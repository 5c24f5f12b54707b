//! The hybrid-vsock `CONNECT <port>\n` line a host client sends first (Firecracker's
//! protocol). Fed one byte at a time so the muxer never reads past the newline: whatever
//! the client sends after it belongs to the guest.

/// The longest line accepted, newline included.
pub(crate) const MAX_LINE: usize = 32;
const PREFIX: &[u8] = b"CONNECT ";

/// Why a `CONNECT` line was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("not a CONNECT line")]
    BadCommand,
    #[error("bad port")]
    BadPort,
}

/// Accumulates a `CONNECT` line.
#[derive(Debug, Default)]
pub(crate) struct LineParser {
    buf: Vec<u8>,
}

impl LineParser {
    /// Takes the next byte: `Ok(None)` while the line is incomplete, `Ok(Some(port))` at
    /// its newline, `Err` as soon as the line cannot be valid.
    pub(crate) fn push(&mut self, b: u8) -> Result<Option<u32>, HandshakeError> {
        if b == b'\n' {
            return parse_connect(&self.buf).map(Some);
        }
        if self.buf.len() + 1 >= MAX_LINE {
            return Err(HandshakeError::TooLong);
        }
        let at = self.buf.len();
        match PREFIX.get(at) {
            Some(&want) if want != b => return Err(HandshakeError::BadCommand),
            None if !b.is_ascii_digit() => return Err(HandshakeError::BadPort),
            _ => {}
        }
        self.buf.push(b);
        Ok(None)
    }
}

/// Parses a whole line without its newline: `CONNECT ` then 1–10 decimal digits of a port
/// below `u32::MAX` (which is `VMADDR_PORT_ANY`).
pub(crate) fn parse_connect(line: &[u8]) -> Result<u32, HandshakeError> {
    if line.len() >= MAX_LINE {
        return Err(HandshakeError::TooLong);
    }
    let digits = line
        .strip_prefix(PREFIX)
        .ok_or(HandshakeError::BadCommand)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::BadPort);
    }
    let port = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    u32::try_from(port)
        .ok()
        .filter(|&p| p != u32::MAX)
        .ok_or(HandshakeError::BadPort)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn feed(bytes: &[u8]) -> Result<Option<u32>, HandshakeError> {
        let mut p = LineParser::default();
        for &b in bytes {
            if let Some(port) = p.push(b)? {
                return Ok(Some(port));
            }
        }
        Ok(None)
    }

    #[test]
    fn good_lines() {
        assert_eq!(feed(b"CONNECT 1024\n"), Ok(Some(1024)));
        assert_eq!(feed(b"CONNECT 0\n"), Ok(Some(0)));
        assert_eq!(feed(b"CONNECT 0001024\n"), Ok(Some(1024)));
        assert_eq!(feed(b"CONNECT 4294967294\n"), Ok(Some(u32::MAX - 1)));
    }

    #[test]
    fn bad_lines() {
        assert_eq!(feed(b"CONNECT 1024"), Ok(None), "no newline yet");
        assert_eq!(feed(b"connect 1\n"), Err(HandshakeError::BadCommand));
        assert_eq!(feed(b"CONNECT\n"), Err(HandshakeError::BadCommand));
        assert_eq!(feed(b"CONNECT \n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT -1\n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT +1\n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT 1 \n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT 12a\n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT 4294967295\n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT 99999999999\n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"CONNECT 1024\r\n"), Err(HandshakeError::BadPort));
        assert_eq!(feed(b"\n"), Err(HandshakeError::BadCommand));
        let long = [b"CONNECT ".as_slice(), &[b'0'; 40]].concat();
        assert_eq!(feed(&long), Err(HandshakeError::TooLong));
        // Rejected at the first wrong byte, not at the newline.
        let mut p = LineParser::default();
        assert_eq!(p.push(b'X'), Err(HandshakeError::BadCommand));
    }

    proptest! {
        /// Any bytes: no panic, never more than MAX_LINE bytes buffered, and any accepted
        /// line is exactly a CONNECT line whose port prints back the same.
        #[test]
        fn fuzz_parser(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut p = LineParser::default();
            for (i, &b) in bytes.iter().enumerate() {
                match p.push(b) {
                    Ok(None) => prop_assert!(p.buf.len() < MAX_LINE),
                    Ok(Some(port)) => {
                        prop_assert!(i < MAX_LINE);
                        prop_assert!(bytes[..i].starts_with(b"CONNECT "));
                        let n: u64 = std::str::from_utf8(&bytes[8..i]).unwrap().parse().unwrap();
                        prop_assert_eq!(n, u64::from(port));
                        break;
                    }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn fuzz_near_valid(port in any::<u64>(), junk in "[ -~]{0,4}") {
            let line = format!("CONNECT {port}{junk}");
            let r = parse_connect(line.as_bytes());
            if junk.is_empty() && port < u64::from(u32::MAX) {
                prop_assert_eq!(r, Ok(port as u32));
            } else if !junk.bytes().all(|b| b.is_ascii_digit()) || port >= u64::from(u32::MAX) {
                prop_assert!(r.is_err());
            }
        }
    }
}
