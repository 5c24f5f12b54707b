//! Credit-based flow control in both directions.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use super::guest::FakeGuest;
use super::Env;
use crate::proto::{Header, Op};
use virtio_queue::QueueT;

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Host → guest: the guest gives 1000 bytes of credit and consumes nothing until it says
/// so; the device never sends beyond the credit, and resumes on CREDIT_UPDATE.
#[test]
fn device_respects_guest_credit() {
    let mut env = Env::new();
    env.guest.rx.set_event_idx(true);
    env.guest.tx.set_event_idx(true);
    const CREDIT: u32 = 1000;
    let mut c = env.client(1024);
    let (req, _) = env
        .guest
        .expect(&mut env.dev, |h| h.op() == Some(Op::Request));
    let hp = req.src_port;
    let with_credit = |op, fwd_cnt| Header {
        buf_alloc: CREDIT,
        fwd_cnt,
        ..FakeGuest::hdr(op, 1024, hp)
    };
    env.guest.send(with_credit(Op::Response, 0), &[]);
    env.read_line(&mut c);

    let sent = pattern(10_000);
    c.write_all(&sent).unwrap();
    let mut got = vec![];
    let mut consumed = 0u32;
    let mut credit_requests = 0;
    while got.len() < sent.len() {
        env.run_for(Duration::from_millis(30));
        for (h, data) in env.guest.inbox.drain(..) {
            match h.op() {
                Some(Op::Rw) => got.extend(data),
                Some(Op::CreditRequest) => credit_requests += 1,
                Some(Op::CreditUpdate) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            got.len() as u32 <= consumed + CREDIT,
            "sent beyond credit: {} > {}",
            got.len(),
            consumed + CREDIT
        );
        assert_eq!(
            got.len() as u32,
            (consumed + CREDIT).min(sent.len() as u32),
            "stopped short of the credit"
        );
        // The guest's application reads everything; tell the device.
        consumed = got.len() as u32;
        env.guest.send(with_credit(Op::CreditUpdate, consumed), &[]);
    }
    assert_eq!(got, sent);
    assert!(credit_requests >= 1, "a blocked device asks for credit");
}

/// Guest → host: a host reader that does not read; the device buffers at most its
/// buf_alloc, stops giving credit, and resumes once the host reads.
#[test]
fn slow_host_reader_stops_credit_then_resumes() {
    let mut env = Env::with(|c| c.buf_alloc = 4096);
    let (mut c, hp) = env.connected_client(1024);
    let total = 1 << 20;
    let data = pattern(total);
    let mut sent = 0usize;
    // As the REQUEST told us.
    let (mut buf_alloc, mut fwd_cnt) = (4096u32, 0u32);
    let mut blocked_since: Option<Instant> = None;
    let mut received = vec![];
    let mut host_reads = false;
    while received.len() < total {
        env.guest.step(&mut env.dev);
        for (h, _) in env.guest.inbox.drain(..) {
            assert!(h.buf_alloc == 4096 && h.fwd_cnt.wrapping_sub(fwd_cnt) < 1 << 31);
            (buf_alloc, fwd_cnt) = (h.buf_alloc, h.fwd_cnt);
        }
        let credit = (buf_alloc as usize).saturating_sub(sent - fwd_cnt as usize);
        if credit > 0 && sent < total {
            let n = credit.min(4096).min(total - sent);
            env.guest
                .send(FakeGuest::hdr(Op::Rw, 1024, hp), &data[sent..sent + n]);
            sent += n;
            blocked_since = None;
        } else if !host_reads {
            // Blocked: the host socket buffer and our 4 KiB are full.
            let since = *blocked_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_millis(100) {
                assert_eq!(
                    sent - fwd_cnt as usize,
                    4096,
                    "the guest used all its credit"
                );
                assert!(sent > 4096, "the host socket took some before blocking");
                host_reads = true;
            }
        }
        if host_reads {
            let mut buf = [0u8; 65536];
            match c.read(&mut buf) {
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert_eq!(received, data);
    assert_eq!(env.dev.metrics().protocol_violations, 0);
}

/// Sending beyond the credit we advertised is a protocol violation: RST.
#[test]
fn credit_overrun_resets() {
    let mut env = Env::with(|c| c.buf_alloc = 4096);
    let (mut c, hp) = env.connected_client(1024);
    // 4096 bytes are fine (the host is not reading yet, but the socket takes them)...
    env.guest.send(FakeGuest::hdr(Op::Rw, 1024, hp), &[1; 4096]);
    // ... but the guest has not been told of any of them being consumed: one more is
    // beyond the credit.
    env.guest.send(FakeGuest::hdr(Op::Rw, 1024, hp), &[2; 1]);
    env.guest.expect_op(&mut env.dev, Op::Rst, hp, 1024);
    assert_eq!(env.dev.metrics().protocol_violations, 1);
    assert_eq!(env.read_to_eof(&mut c).len(), 4096);
    assert_eq!(env.dev.connection_count(), 0);
}

/// CREDIT_REQUEST is answered with CREDIT_UPDATE carrying our counters.
#[test]
fn credit_request_gets_update() {
    let mut env = Env::new();
    let (mut c, hp) = env.connected_client(1024);
    env.guest.send(FakeGuest::hdr(Op::Rw, 1024, hp), b"abc");
    assert_eq!(env.read_n(&mut c, 3), b"abc");
    env.guest
        .send(FakeGuest::hdr(Op::CreditRequest, 1024, hp), &[]);
    let (u, _) = env
        .guest
        .expect_op(&mut env.dev, Op::CreditUpdate, hp, 1024);
    assert_eq!((u.buf_alloc, u.fwd_cnt), (256 * 1024, 3));
}

/// Packet shapes: header split over descriptors, payload over several, all in one.
#[test]
fn any_tx_chain_shape() {
    let mut env = Env::new();
    let (mut c, hp) = env.connected_client(1024);
    let shapes: [&[usize]; 5] = [
        &[54],
        &[20, 24, 10],
        &[44, 3, 3, 4],
        &[1, 1, 42, 10],
        &[100],
    ];
    for (i, shape) in shapes.iter().enumerate() {
        let msg = format!("shape-{i}-xx");
        env.guest
            .send_shaped(FakeGuest::hdr(Op::Rw, 1024, hp), msg.as_bytes(), shape);
        assert_eq!(env.read_n(&mut c, msg.len()), msg.as_bytes());
    }
    assert_eq!(env.dev.metrics().bad_descriptors, 0);
}
