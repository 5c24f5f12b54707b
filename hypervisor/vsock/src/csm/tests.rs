//! The connection state machine alone, over a socketpair.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::EventSet;

use super::{ConnKey, Connection};
use crate::config::VsockConfig;
use crate::metrics::Metrics;
use crate::proto::{Header, Op, HOST_CID, SHUTDOWN_BOTH, SHUTDOWN_SEND};

const KEY: ConnKey = ConnKey {
    local_port: 1 << 30,
    peer_port: 1024,
};

fn cfg() -> VsockConfig {
    let mut c = VsockConfig::new(3, "/unused");
    c.buf_alloc = 4096;
    c
}

fn pkt(op: Op) -> Header {
    Header {
        src_cid: 3,
        dst_cid: HOST_CID,
        src_port: KEY.peer_port,
        dst_port: KEY.local_port,
        op: op.to_u16(),
        type_: 1,
        buf_alloc: 1 << 20,
        ..Header::default()
    }
}

/// A host-initiated connection and the client end of its stream.
fn host_conn() -> (Connection, UnixStream, Arc<Metrics>) {
    let (client, ours) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let m = Arc::new(Metrics::default());
    let c = Connection::host_initiated(ours, KEY, &cfg(), m.clone(), Instant::now());
    (c, client, m)
}

fn next(c: &mut Connection) -> Option<(Op, u32, Vec<u8>)> {
    let mut buf = [0u8; 8192];
    c.next_packet(&mut buf, Instant::now())
        .map(|o| (o.op, o.flags, buf[..o.len].to_vec()))
}

fn established() -> (Connection, UnixStream, Arc<Metrics>) {
    let (mut c, mut client, m) = host_conn();
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Request));
    c.on_guest_packet(&pkt(Op::Response), &[], Instant::now());
    let mut ok = [0u8; 14];
    client.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, format!("OK {}\n", KEY.local_port).as_bytes());
    (c, client, m)
}

#[test]
fn request_then_response_writes_ok() {
    let (c, _client, m) = established();
    assert!(!c.is_dead());
    assert_eq!(m.snapshot().conns_opened, 1);
}

#[test]
fn out_of_state_packets_reset() {
    for op in [Op::Rw, Op::Shutdown, Op::CreditUpdate, Op::Request] {
        let (mut c, _client, m) = host_conn();
        next(&mut c);
        c.on_guest_packet(&pkt(op), b"x", Instant::now());
        assert_eq!(
            next(&mut c).map(|p| p.0),
            Some(Op::Rst),
            "{op:?} while connecting"
        );
        assert!(c.is_dead());
        assert_eq!(m.snapshot().protocol_violations, 1);
    }
    let (mut c, _client, m) = established();
    c.on_guest_packet(&pkt(Op::Request), &[], Instant::now());
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Rst));
    assert_eq!(m.snapshot().protocol_violations, 1);
}

#[test]
fn response_before_request_was_sent_is_a_violation() {
    let (mut c, _client, m) = host_conn();
    c.on_guest_packet(&pkt(Op::Response), &[], Instant::now());
    assert_eq!(m.snapshot().protocol_violations, 1);
    // The guest never heard of us: no RST either.
    assert!(c.is_dead());
}

#[test]
fn data_in_both_directions_with_credit() {
    let (mut c, mut client, _) = established();
    c.on_guest_packet(&pkt(Op::Rw), b"to host", Instant::now());
    let mut b = [0u8; 7];
    client.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"to host");

    client.write_all(b"to guest").unwrap();
    assert_eq!(c.interest(), Some(EventSet::IN));
    c.on_host_event(EventSet::IN, Instant::now());
    assert!(c.has_rx_work());
    let (op, _, data) = next(&mut c).unwrap();
    assert_eq!((op, data.as_slice()), (Op::Rw, b"to guest".as_slice()));
}

#[test]
fn guest_credit_limits_reads() {
    let (mut c, mut client, _) = established();
    let mut small = pkt(Op::CreditUpdate);
    small.buf_alloc = 3;
    c.on_guest_packet(&small, &[], Instant::now());
    client.write_all(b"abcdef").unwrap();
    c.on_host_event(EventSet::IN, Instant::now());
    assert_eq!(next(&mut c).map(|p| p.2), Some(b"abc".to_vec()));
    // Out of credit: one CREDIT_REQUEST, then silence, and no read interest.
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::CreditRequest));
    assert_eq!(next(&mut c), None);
    assert!(!c.has_rx_work());
    assert_eq!(c.interest(), Some(EventSet::empty()));
    small.fwd_cnt = 3;
    c.on_guest_packet(&small, &[], Instant::now());
    assert_eq!(next(&mut c).map(|p| p.2), Some(b"def".to_vec()));
}

#[test]
fn credit_overrun_is_a_violation() {
    let (mut c, _client, m) = established();
    // All 4096 bytes reach the host, but the guest has not been told yet...
    c.on_guest_packet(&pkt(Op::Rw), &[0; 4096], Instant::now());
    assert_eq!(m.snapshot().protocol_violations, 0);
    // ...so one more byte is beyond its credit.
    c.on_guest_packet(&pkt(Op::Rw), &[0; 1], Instant::now());
    assert_eq!(m.snapshot().protocol_violations, 1);
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Rst));
}

#[test]
fn credit_update_after_half_the_buffer_is_forwarded() {
    let (mut c, mut client, _) = established();
    c.on_guest_packet(&pkt(Op::Rw), &[1; 2048], Instant::now());
    let mut b = vec![0u8; 2048];
    client.read_exact(&mut b).unwrap();
    let mut buf = [0u8; 64];
    let out = c.next_packet(&mut buf, Instant::now()).unwrap();
    assert_eq!(out.op, Op::CreditUpdate);
    let h = c.header(&out, 3);
    assert_eq!(
        (h.buf_alloc, h.fwd_cnt, h.src_port, h.dst_port),
        (4096, 2048, KEY.local_port, KEY.peer_port)
    );
}

#[test]
fn data_after_guest_shutdown_send_is_a_violation() {
    let (mut c, _client, m) = established();
    let mut s = pkt(Op::Shutdown);
    s.flags = SHUTDOWN_SEND;
    c.on_guest_packet(&s, &[], Instant::now());
    c.on_guest_packet(&pkt(Op::Rw), b"late", Instant::now());
    assert_eq!(m.snapshot().protocol_violations, 1);
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Rst));
}

#[test]
fn guest_full_shutdown_ends_with_rst() {
    let (mut c, mut client, m) = established();
    let mut s = pkt(Op::Shutdown);
    s.flags = SHUTDOWN_BOTH | 0xf0;
    c.on_guest_packet(&s, &[], Instant::now());
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Rst));
    assert!(c.is_dead());
    let mut b = [0u8; 1];
    assert_eq!(client.read(&mut b).unwrap(), 0);
    assert_eq!(m.snapshot().conns_reset, 0);
}

#[test]
fn deadline_fires_only_when_due() {
    let (mut c, _client, m) = host_conn();
    let d = c.deadline().unwrap();
    c.on_tick(d - Duration::from_millis(1));
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Request));
    c.on_tick(d);
    // The guest heard the REQUEST, so the timeout resets the connection.
    assert_eq!(next(&mut c).map(|p| p.0), Some(Op::Rst));
    assert!(c.is_dead());
    assert_eq!(m.snapshot().conns_reset, 1);
}
