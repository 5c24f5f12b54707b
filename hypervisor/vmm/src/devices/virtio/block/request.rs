//! A virtio-blk request as the guest states it (virtio 1.2 §5.2.6): the 16-byte
//! header, and the checks that turn it into an operation on the disk or a refusal.
//! Pure functions: no guest memory, no file.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};

use super::disk::SECTOR_SIZE;

/// Size of `struct virtio_blk_outhdr { le32 type; le32 reserved; le64 sector; }`.
pub const HEADER_SIZE: usize = 16;

/// The request header, read from the chain's device-readable bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub type_: u32,
    pub sector: u64,
}

impl Header {
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Header {
        let [t0, t1, t2, t3, _, _, _, _, s @ ..] = *b;
        Header {
            type_: u32::from_le_bytes([t0, t1, t2, t3]),
            sector: u64::from_le_bytes(s),
        }
    }
}

/// The status byte the device writes last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    IoErr,
    Unsupp,
}

impl Status {
    pub fn byte(self) -> u8 {
        match self {
            Status::Ok => VIRTIO_BLK_S_OK as u8,
            Status::IoErr => VIRTIO_BLK_S_IOERR as u8,
            Status::Unsupp => VIRTIO_BLK_S_UNSUPP as u8,
        }
    }
}

/// What a well-formed request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read `len` bytes from byte `offset` of the disk into the guest's buffers.
    Read {
        offset: u64,
        len: u64,
    },
    /// Write `len` bytes from the guest's buffers at byte `offset`.
    Write {
        offset: u64,
        len: u64,
    },
    Flush,
    /// Write the serial (at most `len` bytes of it).
    GetId {
        len: u64,
    },
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A type this device does not implement: answered `VIRTIO_BLK_S_UNSUPP`.
    #[error("unsupported request type {0}")]
    Unsupported(u32),
    #[error("data length {0} is not a multiple of 512")]
    Unaligned(u64),
    #[error("sectors {sector}+{len} bytes lie beyond the capacity")]
    OutOfRange { sector: u64, len: u64 },
    #[error("data length {0} exceeds the largest request")]
    TooLarge(u64),
    #[error("write to a read-only disk")]
    ReadOnly,
}

impl Refusal {
    /// The status the guest gets.
    pub fn status(self) -> Status {
        match self {
            Refusal::Unsupported(_) => Status::Unsupp,
            _ => Status::IoErr,
        }
    }
}

/// The limits a request is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Disk size in sectors.
    pub capacity: u64,
    pub read_only: bool,
    /// Most data bytes one request may carry.
    pub max_data: u64,
}

/// Checks `header` with `readable` data bytes after it and `writable` data bytes
/// before the status byte (both as the chain holds them) against `limits`.
pub fn parse(header: Header, readable: u64, writable: u64, limits: Limits) -> Result<Op, Refusal> {
    match header.type_ {
        VIRTIO_BLK_T_IN => {
            let offset = range(header.sector, writable, limits)?;
            Ok(Op::Read {
                offset,
                len: writable,
            })
        }
        VIRTIO_BLK_T_OUT => {
            if limits.read_only {
                return Err(Refusal::ReadOnly);
            }
            let offset = range(header.sector, readable, limits)?;
            Ok(Op::Write {
                offset,
                len: readable,
            })
        }
        VIRTIO_BLK_T_FLUSH => Ok(Op::Flush),
        VIRTIO_BLK_T_GET_ID => Ok(Op::GetId { len: writable }),
        other => Err(Refusal::Unsupported(other)),
    }
}

/// The byte offset of `len` bytes at `sector`, once they are whole sectors within
/// the capacity and the request size limit.
fn range(sector: u64, len: u64, limits: Limits) -> Result<u64, Refusal> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(Refusal::Unaligned(len));
    }
    if len > limits.max_data {
        return Err(Refusal::TooLarge(len));
    }
    let out = Refusal::OutOfRange { sector, len };
    let end = sector.checked_add(len / SECTOR_SIZE).ok_or(out)?;
    if end > limits.capacity {
        return Err(out);
    }
    // sector <= capacity <= u64::MAX / 512 (a file size): no overflow.
    sector.checked_mul(SECTOR_SIZE).ok_or(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        capacity: 8,
        read_only: false,
        max_data: 4096,
    };

    fn hdr(type_: u32, sector: u64) -> Header {
        Header { type_, sector }
    }

    #[test]
    fn header_is_little_endian_with_a_reserved_word() {
        let mut b = [0u8; HEADER_SIZE];
        b[0] = 1;
        b[4..8].copy_from_slice(&[0xff; 4]);
        b[8..].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), hdr(1, 0x0102_0304_0506_0708));
    }

    #[test]
    fn reads_and_writes_are_whole_sectors_within_capacity() {
        let read = parse(hdr(VIRTIO_BLK_T_IN, 2), 0, 1024, LIMITS);
        assert_eq!(
            read,
            Ok(Op::Read {
                offset: 1024,
                len: 1024
            })
        );
        let write = parse(hdr(VIRTIO_BLK_T_OUT, 7), 512, 0, LIMITS);
        assert_eq!(
            write,
            Ok(Op::Write {
                offset: 7 * 512,
                len: 512
            })
        );
        // The last sector is in range, one more is not.
        assert!(parse(hdr(VIRTIO_BLK_T_OUT, 7), 1024, 0, LIMITS).is_err());
        assert_eq!(
            parse(hdr(VIRTIO_BLK_T_IN, 8), 0, 512, LIMITS),
            Err(Refusal::OutOfRange {
                sector: 8,
                len: 512
            })
        );
        assert_eq!(
            parse(hdr(VIRTIO_BLK_T_IN, u64::MAX), 0, 512, LIMITS),
            Err(Refusal::OutOfRange {
                sector: u64::MAX,
                len: 512
            })
        );
        assert_eq!(
            parse(hdr(VIRTIO_BLK_T_IN, 0), 0, 100, LIMITS),
            Err(Refusal::Unaligned(100))
        );
        assert_eq!(
            parse(
                hdr(VIRTIO_BLK_T_IN, 0),
                0,
                8192,
                Limits {
                    capacity: 1 << 40,
                    ..LIMITS
                }
            ),
            Err(Refusal::TooLarge(8192))
        );
        // Zero-length transfers are allowed up to the end of the disk.
        assert_eq!(
            parse(hdr(VIRTIO_BLK_T_IN, 8), 0, 0, LIMITS),
            Ok(Op::Read {
                offset: 4096,
                len: 0
            })
        );
    }

    #[test]
    fn read_only_refuses_writes_only() {
        let ro = Limits {
            read_only: true,
            ..LIMITS
        };
        assert_eq!(
            parse(hdr(VIRTIO_BLK_T_OUT, 0), 512, 0, ro),
            Err(Refusal::ReadOnly)
        );
        assert!(parse(hdr(VIRTIO_BLK_T_IN, 0), 0, 512, ro).is_ok());
        assert_eq!(parse(hdr(VIRTIO_BLK_T_FLUSH, 99), 0, 0, ro), Ok(Op::Flush));
    }

    #[test]
    fn other_types_are_unsupported() {
        assert_eq!(
            parse(hdr(VIRTIO_BLK_T_GET_ID, 0), 0, 20, LIMITS),
            Ok(Op::GetId { len: 20 })
        );
        for t in [2, 3, 11, 13, 0x8000_0000, u32::MAX] {
            let r = parse(hdr(t, 0), 0, 0, LIMITS);
            assert_eq!(r, Err(Refusal::Unsupported(t)));
            assert_eq!(r.unwrap_err().status(), Status::Unsupp);
        }
        assert_eq!(Refusal::ReadOnly.status().byte(), 1);
    }

    proptest! {
        /// Whatever the header and lengths: an accepted read or write lies within the
        /// capacity and the size limit, in whole sectors.
        #[test]
        fn accepted_transfers_lie_within_the_disk(
            type_ in prop_oneof![Just(VIRTIO_BLK_T_IN), Just(VIRTIO_BLK_T_OUT), any::<u32>()],
            sector in prop_oneof![0..16u64, any::<u64>()],
            readable in prop_oneof![0..8192u64, any::<u64>()],
            writable in prop_oneof![0..8192u64, any::<u64>()],
            capacity in prop_oneof![0..16u64, 0..(u64::MAX / 512)],
            read_only in any::<bool>(),
        ) {
            let limits = Limits { capacity, read_only, max_data: 4096 };
            match parse(hdr(type_, sector), readable, writable, limits) {
                Ok(Op::Read { offset, len }) | Ok(Op::Write { offset, len }) => {
                    prop_assert!(len <= 4096 && len % 512 == 0);
                    prop_assert_eq!(offset % 512, 0);
                    prop_assert!(offset + len <= capacity * 512);
                    prop_assert!(type_ == VIRTIO_BLK_T_IN || !read_only);
                }
                Ok(_) | Err(_) => {}
            }
        }
    }
}
