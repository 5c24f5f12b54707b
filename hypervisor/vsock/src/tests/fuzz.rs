//! Property tests: whatever the guest puts in its queues and packets, the device does not
//! panic, stays inside guest memory (vm-memory checks every access; a stray one would be
//! an error, not UB), and keeps every guest-growable structure within its bound.

use std::os::unix::net::UnixListener;

use proptest::prelude::*;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::guest::{FakeGuest, GUEST_CID, MEM_SIZE, QUEUE_SIZE};
use super::Env;
use crate::proto::{Header, Op, HEADER_SIZE, HOST_CID};

const MAX_CONNS: usize = 4;
const CONTROL_CAP: usize = 8;
/// Where fuzzed packet bytes live (clear of the rings and the fake guest's buffers).
const SCRATCH: u64 = 0x180_0000;

fn env() -> (Env, UnixListener) {
    let env = Env::with(|c| {
        c.max_connections = MAX_CONNS;
        c.control_queue_len = CONTROL_CAP;
    });
    let listener = UnixListener::bind(env.port_path(5000)).unwrap();
    (env, listener)
}

fn check_bounds(env: &Env) {
    assert!(env.dev.connection_count() <= MAX_CONNS);
    assert!(env.dev.control_queue_len() <= CONTROL_CAP);
    assert!(env.dev.pending_client_count() == 0);
}

fn header() -> impl Strategy<Value = Header> {
    (
        prop_oneof![4 => Just(GUEST_CID), 1 => any::<u64>()],
        prop_oneof![4 => Just(HOST_CID), 1 => any::<u64>()],
        0u32..4,
        prop_oneof![Just(5000u32), Just(5001), Just(1 << 30), any::<u32>()],
        prop_oneof![
            0u32..200,
            Just(4096),
            Just(65536),
            Just(65537),
            any::<u32>()
        ],
        prop_oneof![4 => Just(1u16), 1 => any::<u16>()],
        0u16..10,
        any::<u32>(),
        prop_oneof![Just(0u32), Just(4096), any::<u32>()],
        any::<u32>(),
    )
        .prop_map(
            |(src_cid, dst_cid, src_port, dst_port, len, type_, op, flags, buf_alloc, fwd_cnt)| {
                Header {
                    src_cid,
                    dst_cid,
                    src_port,
                    dst_port,
                    len,
                    type_,
                    op,
                    flags,
                    buf_alloc,
                    fwd_cnt,
                }
            },
        )
}

/// A descriptor: address anywhere (inside the scratch area, anywhere in memory, across
/// its end, far outside), any length, any flags, any next index.
fn descriptor() -> impl Strategy<Value = Descriptor> {
    let mem = MEM_SIZE as u64;
    (
        prop_oneof![
            4 => (0u64..0x10000).prop_map(|o| SCRATCH + o),
            1 => 0..mem,
            1 => (mem - 64)..mem,
            1 => mem..u64::MAX,
        ],
        prop_oneof![
            Just(0u32),
            1u32..64,
            Just(HEADER_SIZE as u32),
            40u32..5000,
            Just(u32::MAX),
            any::<u32>()
        ],
        prop_oneof![
            Just(0u16),
            Just(VRING_DESC_F_NEXT as u16),
            Just(VRING_DESC_F_WRITE as u16),
            Just(VRING_DESC_F_INDIRECT as u16),
            any::<u16>()
        ],
        prop_oneof![0..QUEUE_SIZE, any::<u16>()],
    )
        .prop_map(|(addr, len, flags, next)| Descriptor::new(addr, len, flags, next))
}

/// Writes headers (and a little payload) across the scratch area so descriptors that
/// point there read something plausible.
fn fill_scratch(env: &Env, headers: &[Header]) {
    for (i, h) in headers.iter().enumerate() {
        let at = SCRATCH + (i as u64) * 0x1000;
        env.guest
            .mem
            .write_slice(&h.to_bytes(), GuestAddress(at))
            .unwrap();
        env.guest
            .mem
            .write_slice(&[0xab; 256], GuestAddress(at + HEADER_SIZE as u64))
            .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Garbage TX chains: any descriptor table, any heads in the available ring.
    #[test]
    fn tx_garbage_chains(
        descs in proptest::collection::vec(descriptor(), 1..=QUEUE_SIZE as usize),
        heads in proptest::collection::vec(0u16..QUEUE_SIZE + 8, 1..48),
        headers in proptest::collection::vec(header(), 16),
    ) {
        let (mut env, _l) = env();
        fill_scratch(&env, &headers);
        for (i, d) in descs.iter().enumerate() {
            env.guest.tx_ring.write_desc(&env.guest.mem, i as u16, *d);
        }
        for h in heads {
            env.guest.tx_ring.publish(&env.guest.mem, h);
        }
        for _ in 0..3 {
            env.dev.handle_event().unwrap();
            env.dev.process_queues(&env.guest.mem, Some(&mut env.guest.rx), Some(&mut env.guest.tx)).unwrap();
            check_bounds(&env);
        }
    }

    /// Garbage RX chains while the device has packets for the guest.
    #[test]
    fn rx_garbage_chains(
        descs in proptest::collection::vec(descriptor(), 1..=QUEUE_SIZE as usize),
        heads in proptest::collection::vec(0u16..QUEUE_SIZE + 8, 1..48),
    ) {
        let (mut env, _l) = env();
        // Refused connects queue RSTs for the guest, up to the cap.
        for port in 0..(CONTROL_CAP as u32 + 4) {
            env.guest.send(FakeGuest::hdr(Op::Request, port, 6000), &[]);
        }
        // TX only: no RX buffer is posted yet.
        env.dev.process_tx(&env.guest.mem, &mut env.guest.tx).unwrap();
        check_bounds(&env);
        prop_assert_eq!(env.guest.rx_posted(), 0);
        for (i, d) in descs.iter().enumerate() {
            env.guest.rx_ring.write_desc(&env.guest.mem, i as u16, *d);
        }
        for h in heads {
            env.guest.rx_ring.publish(&env.guest.mem, h);
        }
        for _ in 0..3 {
            env.dev.handle_event().unwrap();
            env.dev.process_queues(&env.guest.mem, Some(&mut env.guest.rx), Some(&mut env.guest.tx)).unwrap();
            check_bounds(&env);
        }
    }

    /// Well-formed chains, hostile headers: any op in any state, bogus CIDs, ports,
    /// lengths, flags and credit, against a live host listener.
    #[test]
    fn hostile_header_sequences(
        pkts in proptest::collection::vec((header(), 0usize..300), 1..60),
    ) {
        let (mut env, _l) = env();
        for (i, (h, n)) in pkts.into_iter().enumerate() {
            let data = vec![0x5a; n];
            // `send` fixes `len` for RW; keep the fuzzed one for other ops.
            env.guest.send(h, if h.op() == Some(Op::Rw) { &data } else { &[] });
            if i % 4 == 3 {
                env.guest.step(&mut env.dev);
                check_bounds(&env);
            }
        }
        env.guest.step(&mut env.dev);
        check_bounds(&env);
        let m = env.dev.metrics();
        prop_assert!(m.rx_packets <= m.tx_packets * 4 + 64, "replies stay proportionate: {m:?}");
    }
}
