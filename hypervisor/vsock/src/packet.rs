//! Moving packets between descriptor chains and the muxer.
//!
//! The guest chooses the chain shape, so both directions go through virtio-queue's
//! `Reader`/`Writer`, which walk any chain (header split across descriptors, payload in
//! many, one descriptor for everything, indirect tables) and check every address against
//! guest memory. virtio-vsock's `VsockPacket` accepts only "header in the head descriptor,
//! payload in at most one more" and was not used for that reason.
//!
//! A chain of more than [`MAX_CHAIN_DESCRIPTORS`] is refused before it is walked: an
//! indirect table may hold 65 535 descriptors, zero-length ones too, and walking a
//! queue's worth of those would cost the device thread millions of steps.

use std::io::{self, Read, Write};

use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::bitmap::{BitmapSlice, WithBitmapSlice};
use vm_memory::GuestMemory;

use crate::proto::{Header, Op, HEADER_SIZE, MAX_PKT_DATA};

/// Most descriptors one chain may have, indirect ones included. A driver needs a
/// header and its payload's pages (Linux: at most MAX_SKB_FRAGS + 1).
pub const MAX_CHAIN_DESCRIPTORS: usize = 256;

/// Whether `chain` has more than [`MAX_CHAIN_DESCRIPTORS`]; walks no further.
fn too_long<M: GuestMemory>(chain: &DescriptorChain<&M>) -> bool {
    chain.clone().take(MAX_CHAIN_DESCRIPTORS + 1).count() > MAX_CHAIN_DESCRIPTORS
}

/// A TX chain, read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TxPacket {
    /// A packet; for RW its `len` payload bytes are at the start of the data buffer.
    Ok(Header),
    /// The chain cannot hold a header (too short, outside guest memory…).
    BadChain,
    /// A header whose payload is missing, short or over `MAX_PKT_DATA`.
    BadPayload(Header),
}

/// Reads the packet in `chain`; an RW payload goes to `data` (`MAX_PKT_DATA` bytes long).
pub(crate) fn read_tx<'a, M, B>(
    mem: &'a M,
    chain: DescriptorChain<&'a M>,
    data: &mut [u8],
) -> TxPacket
where
    M: GuestMemory,
    M::Bitmap: WithBitmapSlice<'a, S = B>,
    B: BitmapSlice,
{
    if too_long(&chain) {
        return TxPacket::BadChain;
    }
    let Ok(mut reader) = Reader::<B>::new(mem, chain) else {
        return TxPacket::BadChain;
    };
    let mut raw = [0u8; HEADER_SIZE];
    if reader.read_exact(&mut raw).is_err() {
        return TxPacket::BadChain;
    }
    let hdr = Header::from_bytes(&raw);
    if hdr.op() != Some(Op::Rw) || hdr.len == 0 {
        return TxPacket::Ok(hdr);
    }
    let len = hdr.len as usize;
    if len > MAX_PKT_DATA || reader.available_bytes() < len {
        return TxPacket::BadPayload(hdr);
    }
    match data.get_mut(..len).map(|buf| reader.read_exact(buf)) {
        Some(Ok(())) => TxPacket::Ok(hdr),
        _ => TxPacket::BadPayload(hdr),
    }
}

/// The writable part of an RX chain.
pub(crate) struct RxBuf<'a, B> {
    writer: Writer<'a, B>,
}

impl<'a, B: BitmapSlice> RxBuf<'a, B> {
    /// `None` if the chain is too long, or its writable buffers lie outside guest
    /// memory or cannot hold a header.
    pub(crate) fn new<M>(mem: &'a M, chain: DescriptorChain<&'a M>) -> Option<Self>
    where
        M: GuestMemory,
        M::Bitmap: WithBitmapSlice<'a, S = B>,
    {
        if too_long(&chain) {
            return None;
        }
        let writer = Writer::<B>::new(mem, chain).ok()?;
        (writer.available_bytes() >= HEADER_SIZE).then_some(RxBuf { writer })
    }

    /// Payload bytes this buffer can take (capped at `MAX_PKT_DATA`).
    pub(crate) fn capacity(&self) -> usize {
        (self.writer.available_bytes() - HEADER_SIZE).min(MAX_PKT_DATA)
    }

    /// Writes the packet; returns the used length for the used ring.
    pub(crate) fn write(mut self, hdr: &Header, data: &[u8]) -> io::Result<u32> {
        self.writer.write_all(&hdr.to_bytes())?;
        self.writer.write_all(data)?;
        Ok((HEADER_SIZE + data.len()) as u32)
    }
}
