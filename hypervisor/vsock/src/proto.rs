//! The virtio-vsock wire format (virtio spec 1.2, §5.10): header layout, operations, flags.
//!
//! Pure data; no I/O. Every value here can come from a hostile guest, so the parser
//! accepts any 44 bytes and leaves judging the fields to the caller.

/// The well-known CID of the host.
pub const HOST_CID: u64 = 2;
/// Size of the packed `virtio_vsock_hdr`.
pub const HEADER_SIZE: usize = 44;
/// The largest payload this device sends or accepts in one packet (Linux uses the same).
pub const MAX_PKT_DATA: usize = 64 * 1024;
/// `VIRTIO_VSOCK_TYPE_STREAM`, the only socket type this device supports.
pub const TYPE_STREAM: u16 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_RCV`: the sender will receive no more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// `VIRTIO_VSOCK_SHUTDOWN_SEND`: the sender will send no more data.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both shutdown flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

// Our layout must match the one rust-vmm's virtio-vsock crate knows.
const _: () = assert!(HEADER_SIZE == virtio_vsock::packet::PKT_HEADER_SIZE);

/// A vsock operation (`virtio_vsock_hdr.op`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Connection request.
    Request,
    /// Connection accepted.
    Response,
    /// Connection reset (refused, aborted, or the final step of a close).
    Rst,
    /// Half or full close; see the `SHUTDOWN_*` flags.
    Shutdown,
    /// Payload.
    Rw,
    /// Unsolicited credit information.
    CreditUpdate,
    /// Asks the peer for a credit update.
    CreditRequest,
}

impl Op {
    /// The wire value of this operation.
    pub const fn to_u16(self) -> u16 {
        match self {
            Op::Request => 1,
            Op::Response => 2,
            Op::Rst => 3,
            Op::Shutdown => 4,
            Op::Rw => 5,
            Op::CreditUpdate => 6,
            Op::CreditRequest => 7,
        }
    }

    /// Decodes a wire value; `None` for `VIRTIO_VSOCK_OP_INVALID` and unknown values.
    pub const fn from_u16(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// A decoded `virtio_vsock_hdr` (all fields little-endian on the wire).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Source context id.
    pub src_cid: u64,
    /// Destination context id.
    pub dst_cid: u64,
    /// Source port.
    pub src_port: u32,
    /// Destination port.
    pub dst_port: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// Socket type (`TYPE_STREAM`).
    pub type_: u16,
    /// Raw operation; see [`Op::from_u16`].
    pub op: u16,
    /// Operation flags (`SHUTDOWN_*` for `Op::Shutdown`).
    pub flags: u32,
    /// The sender's receive buffer size for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from its receive buffer so far (wrapping).
    pub fwd_cnt: u32,
}

fn le_u16(b: &[u8; HEADER_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8; HEADER_SIZE], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8; HEADER_SIZE], at: usize) -> u64 {
    u64::from(le_u32(b, at)) | (u64::from(le_u32(b, at + 4)) << 32)
}

impl Header {
    /// Decodes the 44 header bytes; any value is accepted.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Header {
        Header {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            type_: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    /// Encodes the header in wire order.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The decoded operation, if it is one we know.
    pub fn op(&self) -> Option<Op> {
        Op::from_u16(self.op)
    }

    /// A reply from the host to the sender of `self` (ports and CIDs swapped), with no
    /// payload and no credit information.
    pub fn reply(&self, op: Op) -> Header {
        Header {
            src_cid: self.dst_cid,
            dst_cid: self.src_cid,
            src_port: self.dst_port,
            dst_port: self.src_port,
            type_: TYPE_STREAM,
            op: op.to_u16(),
            ..Header::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn op_round_trip() {
        for v in 0..=16u16 {
            if let Some(op) = Op::from_u16(v) {
                assert_eq!(op.to_u16(), v);
            } else {
                assert!(v == 0 || v > 7);
            }
        }
    }

    #[test]
    fn reply_swaps_addresses() {
        let h = Header {
            src_cid: 3,
            dst_cid: HOST_CID,
            src_port: 10,
            dst_port: 20,
            len: 5,
            op: Op::Rw.to_u16(),
            ..Header::default()
        };
        let r = h.reply(Op::Rst);
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (2, 3, 20, 10)
        );
        assert_eq!((r.len, r.op(), r.type_), (0, Some(Op::Rst), TYPE_STREAM));
    }

    proptest! {
        #[test]
        fn bytes_round_trip(raw in proptest::array::uniform32(any::<u8>()), tail in proptest::array::uniform12(any::<u8>())) {
            let mut b = [0u8; HEADER_SIZE];
            b[..32].copy_from_slice(&raw);
            b[32..].copy_from_slice(&tail);
            prop_assert_eq!(Header::from_bytes(&b).to_bytes(), b);
        }
    }
}
