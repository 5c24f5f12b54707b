//! The net device end to end without KVM: a driver in the test writes the transport's
//! registers and real split queues in guest memory, the device thread runs for real
//! (the kick eventfd stands in for the ioeventfd), and the host side is a real tap in
//! a network namespace of the test's own, so frames go through the Linux stack.

mod chains;
mod driver;
mod frames;
mod garbage;
mod host;

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use virtio_bindings::virtio_config::{VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::*;
use crate::devices::thread::DeviceThread;
use driver::{queue_base, Buf, Driver, ALL_FEATURES, RX_BUF_LEN, TX_BUF};
use frames::*;
use host::*;

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const GUEST_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const GUEST_MAC: MacAddr = MacAddr([0x02, 0xcc, 0, 0, 0, 0x02]);
/// A station on the host side that does not exist: the source of injected frames.
const OTHER_MAC: MacAddr = MacAddr([0x02, 0xcc, 0, 0, 0, 0x99]);

fn kick() -> EventFd {
    EventFd::new(libc::EFD_NONBLOCK).unwrap()
}

fn spec(tap: &str) -> NetSpec {
    NetSpec {
        tap: tap.to_owned(),
        mac: Some(GUEST_MAC),
    }
}

/// A test frame from the host side to the guest, `len` bytes long.
fn test_frame(tag: u8, len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..len - 14).map(|i| tag ^ i as u8).collect();
    eth(GUEST_MAC, OTHER_MAC, ETH_P_TEST, &payload)
}

/// A device on a fresh tap (up, with the address `cidr` if given), in a network
/// namespace of the calling test's own, set up by a driver with every feature and
/// running (DRIVER_OK): its thread (the tap goes with it), its metrics, a packet socket
/// on the tap, and the driver. `None` where the test is skipped ([`private_netns`]).
fn running(
    test: &str,
    cidr: Option<&str>,
) -> Option<(DeviceThread, Arc<NetMetrics>, PacketSocket, Driver)> {
    if !private_netns(test) {
        return None;
    }
    let tap = unique_tap();
    let (net, thread) = Net::new(&spec(&tap), kick()).unwrap();
    let m = net.metrics();
    tap_up(&tap, cidr);
    let sock = PacketSocket::bind(&tap);
    let mut d = Driver::new(net);
    d.initialize(ALL_FEATURES);
    d.driver_ok();
    Some((thread, m, sock, d))
}

#[test]
fn arp_and_ping_round_trip_through_the_host_stack() {
    if !private_netns("net round trip") {
        return;
    }
    let tap = unique_tap();
    let (net, _thread) = Net::new(&spec(&tap), kick()).unwrap();
    assert_eq!((net.tap_name(), net.mac()), (tap.as_str(), GUEST_MAC));
    let m = net.metrics();
    tap_up(&tap, Some("10.0.0.1/24"));
    let host_mac = tap_mac(&tap);
    let mut d = Driver::new(net);

    assert_eq!(d.r(VIRTIO_MMIO_DEVICE_ID), 1);
    assert_eq!(d.device_features(), ALL_FEATURES);
    // struct virtio_net_config: mac, then status LINK_UP; nothing after it.
    let config = d.config(12);
    assert_eq!(config[..6], GUEST_MAC.octets());
    assert_eq!(config[6..], [1, 0, 0, 0, 0, 0]);

    d.initialize(ALL_FEATURES);
    d.post_rx(8, RX_BUF_LEN);
    d.driver_ok();

    // ARP: the kernel answers for its address on the tap.
    let request = arp_request(GUEST_MAC, GUEST_IP, HOST_IP);
    d.send(&request);
    let reply = d.recv("an ARP reply", |f| arp_reply(f).is_some());
    assert_eq!((dst(&reply), src(&reply)), (GUEST_MAC, host_mac));
    assert_eq!(
        arp_reply(&reply),
        Some(((host_mac, HOST_IP), (GUEST_MAC, GUEST_IP)))
    );
    // The used-buffer interrupt fired (once per round that used buffers: the TX and
    // the RX completion may come in one or two).
    assert!(d.irq.read().unwrap() >= 1);
    assert_eq!(d.r(VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);

    // ICMP echo: the kernel learned our address from the request and answers.
    let payload = b"cocoon virtio-net echo";
    let ping = icmp_echo(
        (GUEST_MAC, GUEST_IP),
        (host_mac, HOST_IP),
        0x1234,
        7,
        payload,
    );
    d.send(&ping);
    let pong = d.recv("an echo reply", |f| icmp_echo_reply(f).is_some());
    assert_eq!(dst(&pong), GUEST_MAC);
    assert_eq!(
        icmp_echo_reply(&pong),
        Some((HOST_IP, 0x1234, 7, &payload[..]))
    );

    assert_eq!(m.tx_packets.load(Relaxed), 2);
    assert_eq!(
        m.tx_bytes.load(Relaxed),
        (request.len() + ping.len()) as u64
    );
    assert!(m.rx_packets.load(Relaxed) >= 2);
    assert!(m.rx_bytes.load(Relaxed) >= (reply.len() + pong.len()) as u64);
    for c in [
        &m.tx_dropped,
        &m.rx_dropped,
        &m.bad_descriptors,
        &m.tap_errors,
        &m.queue_errors,
    ] {
        assert_eq!(c.load(Relaxed), 0);
    }
}

#[test]
fn host_frames_wait_for_rx_buffers_without_spinning() {
    let Some((_thread, m, sock, mut d)) = running("net rx waits", None) else {
        return;
    };

    // No RX buffers: the frames wait in the tap, and the thread sleeps meanwhile.
    let sent: Vec<Vec<u8>> = (0..3u8)
        .map(|i| test_frame(i, 60 + 100 * usize::from(i)))
        .collect();
    let woken = m.wakeups.load(Relaxed);
    for f in &sent {
        sock.send(f);
    }
    std::thread::sleep(Duration::from_millis(300));
    let wakeups = m.wakeups.load(Relaxed) - woken;
    // About one wake-up per frame (edge-triggered; the activation's may land here
    // too), not the endless stream of a level-triggered spin.
    assert!(wakeups <= 5, "{wakeups} wake-ups with no RX buffers");
    assert_eq!(m.rx_packets.load(Relaxed), 0);
    assert_eq!(d.used_idx(RX_QUEUE), 0);

    // Buffers come: the queued frames arrive, in order, whole.
    d.post_rx(4, RX_BUF_LEN);
    for f in &sent {
        let got = d.recv("a host frame", |g| ethertype(g) == ETH_P_TEST);
        assert_eq!(&got, f);
    }
    assert_eq!(m.rx_packets.load(Relaxed), 3);
    assert_eq!(
        m.rx_bytes.load(Relaxed),
        sent.iter().map(|f| f.len() as u64).sum::<u64>()
    );
    assert_eq!(m.rx_dropped.load(Relaxed), 0);

    // A frame that arrives while buffers are posted goes straight in.
    let late = test_frame(9, 1514);
    sock.send(&late);
    assert_eq!(
        d.recv("the late frame", |g| ethertype(g) == ETH_P_TEST),
        late
    );
}

#[test]
fn bad_chains_and_oversize_frames_are_counted() {
    let Some((_thread, m, sock, mut d)) = running("net bad chains", Some("10.0.0.1/24")) else {
        return;
    };

    // RX: a chain too small for a header, one outside guest memory, a read-only one,
    // then a 40-byte one: the 100-byte frame does not fit it and is dropped, the
    // 20-byte frame after it goes in.
    let small = d.post(RX_QUEUE, &[Buf::write(0x30_0000, 8)]);
    let outside = d.post(RX_QUEUE, &[Buf::write(driver::MEM_SIZE - 16, 64)]);
    let read_only = d.post(RX_QUEUE, &[Buf::read(0x30_1000, 2048)]);
    let snug = d.post(
        RX_QUEUE,
        &[Buf::write(0x30_2000, 30), Buf::write(0x30_3000, 10)],
    );
    sock.send(&test_frame(1, 100));
    let runt = test_frame(2, 20);
    sock.send(&runt);
    d.kick(RX_QUEUE);
    d.wait_used(RX_QUEUE, 4);
    for (n, head) in [small, outside, read_only].into_iter().enumerate() {
        assert_eq!(d.used(RX_QUEUE, n as u16), (u32::from(head), 0));
    }
    assert_eq!(d.used(RX_QUEUE, 3), (u32::from(snug), 32));
    d.skip_rx(4);
    let mut got = [0u8; 32];
    d.mem
        .read_slice(&mut got[..30], GuestAddress(0x30_2000))
        .unwrap();
    d.mem
        .read_slice(&mut got[30..], GuestAddress(0x30_3000))
        .unwrap();
    assert_eq!(got[..12], driver::RX_HDR);
    assert_eq!(got[12..], runt[..]);
    assert_eq!(m.bad_descriptors.load(Relaxed), 3);
    assert_eq!(m.rx_dropped.load(Relaxed), 1);
    assert_eq!(m.rx_packets.load(Relaxed), 1);

    // TX: no whole header, a runt frame, a write-only chain, a chain outside memory,
    // one byte over the limit; then exactly the limit, which goes to the tap.
    let tx = |d: &mut Driver, bufs: &[Buf]| d.send_chain(bufs);
    tx(&mut d, &[Buf::read(TX_BUF, 11)]);
    tx(&mut d, &[Buf::read(TX_BUF, 12 + 13)]);
    tx(&mut d, &[Buf::write(TX_BUF, 100)]);
    tx(&mut d, &[Buf::read(driver::MEM_SIZE - 8, 100)]);
    let half = (MAX_TX_CHAIN_LEN / 2) as u32;
    tx(
        &mut d,
        &[Buf::read(TX_BUF, half), Buf::read(TX_BUF, half + 1)],
    );
    assert_eq!(m.bad_descriptors.load(Relaxed), 6);
    assert_eq!(m.tx_dropped.load(Relaxed), 2);
    assert_eq!(m.tx_packets.load(Relaxed), 0);
    let big = vec![0xa5u8; MAX_TX_CHAIN_LEN];
    d.mem.write_slice(&big, GuestAddress(TX_BUF)).unwrap();
    tx(&mut d, &[Buf::read(TX_BUF, MAX_TX_CHAIN_LEN as u32)]);
    assert_eq!(m.tx_packets.load(Relaxed), 1);
    assert_eq!(
        m.tx_bytes.load(Relaxed),
        (MAX_TX_CHAIN_LEN - VNET_HDR_LEN) as u64
    );

    // Any chain shape: the header split over two descriptors, the frame over three,
    // with a garbage offload request in the header (ignored). The kernel answers.
    d.post_rx(4, RX_BUF_LEN);
    let request = arp_request(GUEST_MAC, GUEST_IP, HOST_IP);
    let mut chain = vec![0u8; VNET_HDR_LEN];
    chain[0] = 1; // NEEDS_CSUM
    chain[1] = 3; // GSO_UDP
    chain.extend_from_slice(&request);
    let cuts = [0, 5, 12, 20, 21, chain.len()];
    let bufs: Vec<Buf> = cuts
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let at = TX_BUF + 0x1000 * i as u64;
            d.mem
                .write_slice(&chain[w[0]..w[1]], GuestAddress(at))
                .unwrap();
            Buf::read(at, (w[1] - w[0]) as u32)
        })
        .collect();
    tx(&mut d, &bufs);
    let reply = d.recv("an ARP reply", |f| arp_reply(f).is_some());
    assert_eq!(arp_reply(&reply).unwrap().0 .1, HOST_IP);
    assert_eq!(m.tx_packets.load(Relaxed), 2);
    assert_eq!(m.tap_errors.load(Relaxed), 0);
    assert_eq!(m.queue_errors.load(Relaxed), 0);
}

#[test]
fn a_broken_ring_stops_the_device_until_reset() {
    let Some((_thread, m, sock, mut d)) = running("net broken ring", None) else {
        return;
    };
    // An available index far ahead of the ring.
    d.mem
        .write_obj(0x8000u16, GuestAddress(queue_base(TX_QUEUE) + 0x1000 + 2))
        .unwrap();
    d.kick(TX_QUEUE);
    wait_for("the queue error", || m.queue_errors.load(Relaxed) == 1);
    // Nothing is served any more: a posted RX buffer stays empty.
    d.post_rx(1, RX_BUF_LEN);
    sock.send(&test_frame(1, 64));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.used_idx(RX_QUEUE), 0);
    // After a reset the device works again; the frame waited in the tap.
    d.initialize(ALL_FEATURES);
    d.post_rx(2, RX_BUF_LEN);
    d.driver_ok();
    d.kick(RX_QUEUE);
    let got = d.recv("the waiting frame", |f| ethertype(f) == ETH_P_TEST);
    assert_eq!(got, test_frame(1, 64));
    assert_eq!(m.queue_errors.load(Relaxed), 1);
}

#[test]
fn the_tap_vanishes_when_the_thread_stops() {
    if !private_netns("net tap cleanup") {
        return;
    }
    let tap = unique_tap();
    assert_eq!(ifindex(&tap), None);
    let (net, thread) = Net::new(&spec(&tap), kick()).unwrap();
    assert!(ifindex(&tap).is_some(), "the tap was created");
    // The transport may outlive the thread; the tap goes with the thread.
    let _d = Driver::new(net);
    thread.stop();
    wait_for("the tap to vanish", || ifindex(&tap).is_none());
}

#[test]
fn an_existing_persistent_tap_is_used_and_kept() {
    if !private_netns("net persistent tap") {
        return;
    }
    let tap = unique_tap();
    let _made = PersistentTap::create(&tap);
    let before = ifindex(&tap).unwrap();
    let (net, thread) = Net::new(&spec(&tap), kick()).unwrap();
    assert_eq!(
        ifindex(&tap),
        Some(before),
        "the same interface, not a new one"
    );
    tap_up(&tap, None);
    let sock = PacketSocket::bind(&tap);
    let mut d = Driver::new(net);
    d.initialize(ALL_FEATURES);
    d.post_rx(2, RX_BUF_LEN);
    d.driver_ok();
    let f = test_frame(5, 200);
    sock.send(&f);
    assert_eq!(d.recv("a host frame", |g| ethertype(g) == ETH_P_TEST), f);
    thread.stop();
    // Closing our queue leaves a persistent tap in place, for the next VM.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(ifindex(&tap), Some(before));
    // And it can be attached again.
    let (_net, _thread) = Net::new(&spec(&tap), kick()).unwrap();
}

#[test]
fn open_errors_name_the_interface() {
    if !private_netns("net open errors") {
        return;
    }
    // Loopback exists and is no tap.
    let err = Net::new(&spec("lo"), kick()).err().unwrap();
    assert!(
        matches!(err, NetError::Tap(TapError::SetIff(ref n, _)) if n == "lo"),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"lo\""), "{err}");
    let err = Net::new(&spec("much-too-long-name"), kick()).err().unwrap();
    assert!(err.to_string().contains("much-too-long-name"), "{err}");
    // A tap in use by a device cannot be opened by a second one.
    let tap = unique_tap();
    let (_net, _thread) = Net::new(&spec(&tap), kick()).unwrap();
    let err = Net::new(&spec(&tap), kick()).err().unwrap();
    assert!(err.to_string().contains(&tap), "{err}");
}

#[test]
fn activation_needs_both_queues_and_version_1() {
    if !private_netns("net activation") {
        return;
    }
    let tap = unique_tap();
    let (net, _thread) = Net::new(&spec(&tap), kick()).unwrap();
    let mut d = Driver::new(net);
    // Only the TX queue made ready.
    d.w(VIRTIO_MMIO_STATUS, 1);
    d.w(VIRTIO_MMIO_STATUS, 3);
    d.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
    d.w(VIRTIO_MMIO_DRIVER_FEATURES, 1 << (VIRTIO_F_VERSION_1 - 32));
    d.w(VIRTIO_MMIO_STATUS, 0xb);
    d.w(VIRTIO_MMIO_QUEUE_SEL, 1);
    d.w(VIRTIO_MMIO_QUEUE_DESC_LOW, queue_base(1) as u32);
    d.w(VIRTIO_MMIO_QUEUE_AVAIL_LOW, queue_base(1) as u32 + 0x1000);
    d.w(VIRTIO_MMIO_QUEUE_USED_LOW, queue_base(1) as u32 + 0x2000);
    d.w(VIRTIO_MMIO_QUEUE_READY, 1);
    d.w(VIRTIO_MMIO_STATUS, 0xf);
    assert!(!d.t.is_activated());
    assert_ne!(d.r(VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    // A legacy driver (no VERSION_1) is refused at FEATURES_OK.
    d.w(VIRTIO_MMIO_STATUS, 0);
    d.w(VIRTIO_MMIO_STATUS, 3);
    d.w(VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
    d.w(VIRTIO_MMIO_DRIVER_FEATURES, 1 << VIRTIO_NET_F_MAC);
    d.w(VIRTIO_MMIO_STATUS, 0xb);
    assert_eq!(d.r(VIRTIO_MMIO_STATUS), 3);
}
