//! Orderly and abrupt close in both directions, and the timeouts.

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use super::guest::FakeGuest;
use super::Env;
use crate::proto::{Header, Op, SHUTDOWN_BOTH, SHUTDOWN_RCV, SHUTDOWN_SEND};

fn shutdown(src: u32, dst: u32, flags: u32) -> Header {
    Header {
        flags,
        ..FakeGuest::hdr(Op::Shutdown, src, dst)
    }
}

fn fast(env_cfg: &mut crate::VsockConfig) {
    env_cfg.connect_timeout = Duration::from_millis(100);
    env_cfg.shutdown_timeout = Duration::from_millis(100);
    env_cfg.handshake_timeout = Duration::from_millis(100);
}

/// Host half-closes: the guest gets SHUTDOWN(SEND) and can still send; the guest's full
/// shutdown then ends the connection with an RST and the host sees EOF.
#[test]
fn orderly_close_host_first() {
    let mut env = Env::new();
    let (mut c, hp) = env.connected_client(1024);
    c.write_all(b"last words").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let (_, data) = env.guest.expect_op(&mut env.dev, Op::Rw, hp, 1024);
    assert_eq!(data, b"last words");
    let (s, _) = env.guest.expect_op(&mut env.dev, Op::Shutdown, hp, 1024);
    assert_eq!(s.flags, SHUTDOWN_SEND);

    env.guest.send(FakeGuest::hdr(Op::Rw, 1024, hp), b"reply");
    assert_eq!(env.read_n(&mut c, 5), b"reply");
    env.guest.send(shutdown(1024, hp, SHUTDOWN_BOTH), &[]);
    env.guest.expect_op(&mut env.dev, Op::Rst, hp, 1024);
    assert_eq!(env.read_to_eof(&mut c), b"");
    assert_eq!(env.dev.connection_count(), 0);
    assert_eq!(
        env.dev.metrics().conns_reset,
        0,
        "an orderly close is not a reset"
    );
}

/// Guest half-closes: the host reads EOF but can still write; its close then ends the
/// connection.
#[test]
fn orderly_close_guest_first() {
    let mut env = Env::new();
    let listener = UnixListener::bind(env.port_path(5000)).unwrap();
    env.guest.send(FakeGuest::hdr(Op::Request, 9, 5000), &[]);
    env.guest.expect_op(&mut env.dev, Op::Response, 5000, 9);
    let (mut host, _) = listener.accept().unwrap();
    host.set_nonblocking(true).unwrap();

    env.guest.send(FakeGuest::hdr(Op::Rw, 9, 5000), b"request");
    env.guest.send(shutdown(9, 5000, SHUTDOWN_SEND), &[]);
    assert_eq!(env.read_to_eof(&mut host), b"request");
    host.write_all(b"response").unwrap();
    let (_, data) = env.guest.expect_op(&mut env.dev, Op::Rw, 5000, 9);
    assert_eq!(data, b"response");
    drop(host);
    // Both directions are done: the connection ends with an RST.
    env.guest.expect_op(&mut env.dev, Op::Rst, 5000, 9);
    assert_eq!(env.dev.connection_count(), 0);
}

/// SHUTDOWN(RCV) from the guest: the host's writes fail, nothing more is sent to the guest.
#[test]
fn guest_shutdown_rcv_stops_host_to_guest() {
    let mut env = Env::new();
    let (mut c, hp) = env.connected_client(1024);
    env.guest.send(shutdown(1024, hp, SHUTDOWN_RCV), &[]);
    env.run_for(Duration::from_millis(20));
    let _ = c.write_all(b"ignored");
    env.run_for(Duration::from_millis(20));
    assert!(env.guest.inbox.iter().all(|(h, _)| h.op() != Some(Op::Rw)));
    // The guest can still send.
    env.guest.send(FakeGuest::hdr(Op::Rw, 1024, hp), b"still");
    assert_eq!(env.read_n(&mut c, 5), b"still");
}

/// The host client drops: the guest gets SHUTDOWN(RCV|SEND), answers RST, done.
#[test]
fn abrupt_host_close() {
    let mut env = Env::new();
    let (c, hp) = env.connected_client(1024);
    drop(c);
    let (s, _) = env.guest.expect_op(&mut env.dev, Op::Shutdown, hp, 1024);
    assert_eq!(s.flags, SHUTDOWN_BOTH);
    env.guest.send(FakeGuest::hdr(Op::Rst, 1024, hp), &[]);
    env.run_for(Duration::from_millis(10));
    assert_eq!(env.dev.connection_count(), 0);
    assert!(
        env.guest.inbox.iter().all(|(h, _)| h.op() != Some(Op::Rst)),
        "no RST for an RST"
    );
}

/// The guest resets: the host stream is closed at once, buffered data or not.
#[test]
fn abrupt_guest_reset() {
    let mut env = Env::new();
    let (mut c, hp) = env.connected_client(1024);
    env.guest.send(FakeGuest::hdr(Op::Rst, 1024, hp), &[]);
    assert_eq!(env.read_to_eof(&mut c), b"");
    assert_eq!(env.dev.connection_count(), 0);
    assert_eq!(env.dev.metrics().conns_reset, 1);
    // Late packets on the dead connection are refused.
    env.guest.send(FakeGuest::hdr(Op::Rw, 1024, hp), b"late");
    env.guest.expect_op(&mut env.dev, Op::Rst, hp, 1024);
}

/// The guest never answers a host connect: the client is closed without OK, the guest
/// gets an RST in case it answers later.
#[test]
fn connect_timeout() {
    let mut env = Env::with(fast);
    let mut c = env.client(1024);
    let (req, _) = env
        .guest
        .expect(&mut env.dev, |h| h.op() == Some(Op::Request));
    let start = Instant::now();
    assert_eq!(env.read_to_eof(&mut c), b"");
    assert!(start.elapsed() >= Duration::from_millis(50));
    env.guest
        .expect_op(&mut env.dev, Op::Rst, req.src_port, 1024);
    assert_eq!(env.dev.connection_count(), 0);
    // A late RESPONSE is refused.
    env.guest
        .send(FakeGuest::hdr(Op::Response, 1024, req.src_port), &[]);
    env.guest
        .expect_op(&mut env.dev, Op::Rst, req.src_port, 1024);
}

/// A connect while the guest has no RX buffers: the REQUEST was never delivered, so the
/// timeout closes the client without telling the guest anything.
#[test]
fn connect_timeout_before_guest_driver_is_up() {
    let mut env = Env::with(fast);
    let mut c = env.client(1024);
    let start = Instant::now();
    // Run only the host side: no RX processing.
    let mut buf = [0u8; 8];
    loop {
        env.dev.handle_event().unwrap();
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => panic!("no OK expected"),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(env.dev.connection_count(), 0);
    env.run_for(Duration::from_millis(20));
    assert!(env.guest.inbox.is_empty(), "{:?}", env.guest.inbox);
}

/// The host closes, the guest never finishes closing: RST after the shutdown timeout.
#[test]
fn shutdown_timeout() {
    let mut env = Env::with(fast);
    let (c, hp) = env.connected_client(1024);
    drop(c);
    env.guest.expect_op(&mut env.dev, Op::Shutdown, hp, 1024);
    let start = Instant::now();
    env.guest.expect_op(&mut env.dev, Op::Rst, hp, 1024);
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(env.dev.connection_count(), 0);
}

/// The guest closes fully while the host is not reading: the connection waits for the
/// host only up to the shutdown timeout.
#[test]
fn shutdown_timeout_with_unread_data() {
    let mut env = Env::with(|c| {
        fast(c);
        c.buf_alloc = 4096;
    });
    let (mut c, hp) = env.connected_client(1024);
    // Fill the host socket and our buffer, within credit.
    let mut fwd = 0u32;
    let mut sent = 0u32;
    for _ in 0..200 {
        let credit = 4096 - (sent - fwd);
        if credit > 0 {
            env.guest
                .send(FakeGuest::hdr(Op::Rw, 1024, hp), &vec![7; credit as usize]);
            sent += credit;
        }
        env.run_for(Duration::from_millis(2));
        for (h, _) in env.guest.inbox.drain(..) {
            fwd = h.fwd_cnt;
        }
    }
    env.guest.send(shutdown(1024, hp, SHUTDOWN_BOTH), &[]);
    env.guest.expect_op(&mut env.dev, Op::Rst, hp, 1024);
    assert_eq!(env.dev.connection_count(), 0);
    let mut n = 0;
    loop {
        let mut buf = [0u8; 65536];
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(_) => break,
        }
    }
    assert!(
        n > 0 && n < sent as usize,
        "the host got what was flushed, then EOF"
    );
}

/// A host client that never finishes its CONNECT line is closed.
#[test]
fn handshake_timeout() {
    let mut env = Env::with(fast);
    let mut c = UnixStream::connect(&env.uds).unwrap();
    c.write_all(b"CONN").unwrap();
    c.set_nonblocking(true).unwrap();
    assert_eq!(env.read_to_eof(&mut c), b"");
    assert_eq!(env.dev.pending_client_count(), 0);
}
