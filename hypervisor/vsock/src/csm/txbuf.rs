//! Bytes on their way from the guest to the host stream, waiting for the host to read.
//!
//! Bounded by the connection's credit (the caller checks before pushing). A preamble (the
//! hybrid protocol's `OK <port>\n`) goes out before any guest byte and is not guest data.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Write};

#[derive(Debug, Default)]
pub(crate) struct TxBuf {
    preamble: VecDeque<u8>,
    data: VecDeque<u8>,
}

impl TxBuf {
    pub(crate) fn is_empty(&self) -> bool {
        self.preamble.is_empty() && self.data.is_empty()
    }

    /// Guest bytes waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn push_preamble(&mut self, bytes: &[u8]) {
        self.preamble.extend(bytes);
    }

    /// Writes `data` to `w` behind anything already buffered; keeps what `w` does not take.
    /// Returns how many guest bytes reached `w`.
    pub(crate) fn write_or_buffer<W: Write>(
        &mut self,
        w: &mut W,
        data: &[u8],
    ) -> io::Result<usize> {
        let earlier = self.flush(w)?;
        let taken = if self.is_empty() {
            write_some(w, data)?
        } else {
            0
        };
        self.data.extend(data.get(taken..).unwrap_or_default());
        Ok(earlier + taken)
    }

    /// Writes as much as `w` takes. Returns the guest bytes (not preamble) written.
    pub(crate) fn flush<W: Write>(&mut self, w: &mut W) -> io::Result<usize> {
        while !self.preamble.is_empty() {
            let (front, _) = self.preamble.as_slices();
            let n = write_some(w, front)?;
            if n == 0 {
                return Ok(0);
            }
            self.preamble.drain(..n);
        }
        let mut total = 0;
        while !self.data.is_empty() {
            let (front, _) = self.data.as_slices();
            let n = write_some(w, front)?;
            if n == 0 {
                break;
            }
            self.data.drain(..n);
            total += n;
        }
        Ok(total)
    }
}

/// One `write`, with `WouldBlock` as 0 and `Interrupted` retried.
fn write_some<W: Write>(w: &mut W, buf: &[u8]) -> io::Result<usize> {
    if buf.is_empty() {
        return Ok(0);
    }
    loop {
        return match w.write(buf) {
            Ok(0) => Err(io::Error::from(ErrorKind::WriteZero)),
            Ok(n) => Ok(n.min(buf.len())),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => Err(e),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes, then blocks.
    struct Slow {
        out: Vec<u8>,
        room: usize,
    }

    impl Write for Slow {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room).min(3);
            self.out.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn preamble_first_then_data_in_order() {
        let mut b = TxBuf::default();
        let mut w = Slow {
            out: vec![],
            room: 4,
        };
        b.push_preamble(b"OK 7\n");
        assert_eq!(b.write_or_buffer(&mut w, b"hello").unwrap(), 0);
        assert_eq!(b.len(), 5);
        w.room = 100;
        assert_eq!(b.flush(&mut w).unwrap(), 5);
        assert!(b.is_empty());
        assert_eq!(w.out, b"OK 7\nhello");
        // One write when nothing is buffered; the rest waits for the next flush.
        assert_eq!(b.write_or_buffer(&mut w, b"more").unwrap(), 3);
        assert_eq!(b.flush(&mut w).unwrap(), 1);
        assert_eq!(w.out, b"OK 7\nhellomore");
    }

    #[test]
    fn errors_surface() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut b = TxBuf::default();
        assert!(b.write_or_buffer(&mut Broken, b"x").is_err());
    }
}
