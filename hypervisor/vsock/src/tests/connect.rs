//! Connection set-up both ways, and refusals.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::Duration;

use super::guest::{FakeGuest, GUEST_CID};
use super::Env;
use crate::proto::{Header, Op, HOST_CID, TYPE_STREAM};

#[test]
fn host_initiated_connect_and_data_both_ways() {
    let mut env = Env::new();
    let mut c = env.client(1024);
    let (req, _) = env
        .guest
        .expect(&mut env.dev, |h| h.op() == Some(Op::Request));
    assert_eq!(
        (req.src_cid, req.dst_cid, req.dst_port, req.type_),
        (HOST_CID, GUEST_CID, 1024, TYPE_STREAM)
    );
    assert!(req.src_port >= 1 << 30);
    assert_eq!(req.buf_alloc, 256 * 1024);
    let host_port = req.src_port;

    env.guest
        .send(FakeGuest::hdr(Op::Response, 1024, host_port), &[]);
    assert_eq!(env.read_line(&mut c), format!("OK {host_port}\n"));

    c.write_all(b"ping").unwrap();
    let (rw, data) = env.guest.expect_op(&mut env.dev, Op::Rw, host_port, 1024);
    assert_eq!((data.as_slice(), rw.len), (b"ping".as_slice(), 4));

    env.guest
        .send(FakeGuest::hdr(Op::Rw, 1024, host_port), b"pong");
    assert_eq!(env.read_n(&mut c, 4), b"pong");
    assert_eq!(env.dev.connection_count(), 1);
    let m = env.dev.metrics();
    assert_eq!(
        (m.conns_opened, m.protocol_violations, m.bad_descriptors),
        (1, 0, 0)
    );
    assert_eq!((m.rx_bytes, m.tx_bytes), (4, 4));
}

#[test]
fn bytes_after_connect_line_wait_for_the_guest() {
    let mut env = Env::new();
    let mut c = std::os::unix::net::UnixStream::connect(&env.uds).unwrap();
    // Pipelined: the request goes in the same write as the CONNECT line.
    c.write_all(b"CONNECT 77\nearly").unwrap();
    c.set_nonblocking(true).unwrap();
    let (req, _) = env
        .guest
        .expect(&mut env.dev, |h| h.op() == Some(Op::Request));
    env.guest
        .send(FakeGuest::hdr(Op::Response, 77, req.src_port), &[]);
    assert_eq!(env.read_line(&mut c), format!("OK {}\n", req.src_port));
    let (_, data) = env.guest.expect_op(&mut env.dev, Op::Rw, req.src_port, 77);
    assert_eq!(data, b"early");
}

#[test]
fn guest_initiated_connect_and_data_both_ways() {
    let mut env = Env::new();
    let listener = UnixListener::bind(env.port_path(5000)).unwrap();
    env.guest.send(FakeGuest::hdr(Op::Request, 7777, 5000), &[]);
    let (resp, _) = env.guest.expect_op(&mut env.dev, Op::Response, 5000, 7777);
    assert_eq!((resp.src_cid, resp.dst_cid), (HOST_CID, GUEST_CID));
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();

    env.guest
        .send(FakeGuest::hdr(Op::Rw, 7777, 5000), b"hello host");
    assert_eq!(env.read_n(&mut host, 10), b"hello host");
    host.write_all(b"hello guest").unwrap();
    let (_, data) = env.guest.expect_op(&mut env.dev, Op::Rw, 5000, 7777);
    assert_eq!(data, b"hello guest");
}

#[test]
fn guest_connect_to_missing_port_gets_rst() {
    let mut env = Env::new();
    env.guest.send(FakeGuest::hdr(Op::Request, 7777, 6000), &[]);
    let (rst, _) = env.guest.expect_op(&mut env.dev, Op::Rst, 6000, 7777);
    assert_eq!((rst.dst_cid, rst.len), (GUEST_CID, 0));
    assert_eq!(env.dev.connection_count(), 0);
}

#[test]
fn host_connect_refused_by_guest_closes_client_without_ok() {
    let mut env = Env::new();
    let mut c = env.client(1024);
    let (req, _) = env
        .guest
        .expect(&mut env.dev, |h| h.op() == Some(Op::Request));
    env.guest
        .send(FakeGuest::hdr(Op::Rst, 1024, req.src_port), &[]);
    assert_eq!(env.read_to_eof(&mut c), b"");
    assert_eq!(env.dev.connection_count(), 0);
}

#[test]
fn packets_for_unknown_connections_get_rst() {
    let mut env = Env::new();
    for op in [
        Op::Rw,
        Op::Response,
        Op::Shutdown,
        Op::CreditUpdate,
        Op::CreditRequest,
    ] {
        env.guest.send(FakeGuest::hdr(op, 40, 41), b"x");
        env.guest.expect_op(&mut env.dev, Op::Rst, 41, 40);
    }
    // An RST is never answered.
    env.guest.send(FakeGuest::hdr(Op::Rst, 40, 41), &[]);
    env.run_for(Duration::from_millis(20));
    assert!(env.guest.inbox.is_empty(), "{:?}", env.guest.inbox);
}

#[test]
fn foreign_cids_are_dropped_silently() {
    let mut env = Env::new();
    let listener = UnixListener::bind(env.port_path(5000)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let spoofed = [
        Header {
            src_cid: GUEST_CID + 1,
            ..FakeGuest::hdr(Op::Request, 1, 5000)
        },
        Header {
            src_cid: HOST_CID,
            ..FakeGuest::hdr(Op::Request, 1, 5000)
        },
        Header {
            dst_cid: 99,
            ..FakeGuest::hdr(Op::Request, 1, 5000)
        },
        Header {
            dst_cid: GUEST_CID,
            ..FakeGuest::hdr(Op::Request, 1, 5000)
        },
    ];
    for h in spoofed {
        env.guest.send(h, &[]);
    }
    env.run_for(Duration::from_millis(20));
    assert!(env.guest.inbox.is_empty());
    assert!(listener.accept().is_err(), "no connection reached the host");
    assert_eq!(env.dev.metrics().protocol_violations, 4);
}

#[test]
fn non_stream_type_is_refused() {
    let mut env = Env::new();
    let _listener = UnixListener::bind(env.port_path(5000)).unwrap();
    let seqpacket = Header {
        type_: 2,
        ..FakeGuest::hdr(Op::Request, 9, 5000)
    };
    env.guest.send(seqpacket, &[]);
    env.guest.expect_op(&mut env.dev, Op::Rst, 5000, 9);
    assert_eq!(env.dev.connection_count(), 0);
}

#[test]
fn malformed_connect_lines_are_closed() {
    let mut env = Env::new();
    for line in [
        &b"HELLO\n"[..],
        b"CONNECT x\n",
        b"CONNECT 4294967295\n",
        &[b'9'; 40],
    ] {
        let mut c = std::os::unix::net::UnixStream::connect(&env.uds).unwrap();
        c.write_all(line).unwrap();
        c.set_nonblocking(true).unwrap();
        assert_eq!(env.read_to_eof(&mut c), b"");
    }
    assert_eq!(env.dev.pending_client_count(), 0);
    assert!(env.guest.inbox.is_empty());
}

#[test]
fn connections_are_capped() {
    let mut env = Env::with(|c| c.max_connections = 2);
    let _l = UnixListener::bind(env.port_path(5000)).unwrap();
    for port in 0..3 {
        env.guest.send(FakeGuest::hdr(Op::Request, port, 5000), &[]);
    }
    env.guest.expect_op(&mut env.dev, Op::Response, 5000, 0);
    env.guest.expect_op(&mut env.dev, Op::Response, 5000, 1);
    env.guest.expect_op(&mut env.dev, Op::Rst, 5000, 2);
    assert_eq!(env.dev.connection_count(), 2);
    // A host client over the cap is closed before the guest hears of it.
    let mut c = env.client(1024);
    assert_eq!(env.read_to_eof(&mut c), b"");
}

#[test]
fn device_reset_drops_connections() {
    let mut env = Env::new();
    let (mut c, _) = env.connected_client(1024);
    env.guest.send(FakeGuest::hdr(Op::Request, 1, 6000), &[]);
    env.dev
        .process_tx(&env.guest.mem, &mut env.guest.tx)
        .unwrap();
    assert_eq!(env.dev.control_queue_len(), 1);
    env.dev.reset();
    assert_eq!(
        (env.dev.connection_count(), env.dev.control_queue_len()),
        (0, 0)
    );
    assert_eq!(env.read_to_eof(&mut c), b"");
}
