//! The host side of the tests: a private network namespace per test (so taps,
//! addresses and routes never touch the machine's own and vanish with the test),
//! unique tap names, `ip`, and an AF_PACKET socket that injects frames into a tap.

use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};

use super::super::tap::TUN_DEVICE;
use super::super::MacAddr;

/// Moves the calling thread (the test's own) into a fresh network namespace; threads
/// and processes it starts from now on live there too. False (and the test is
/// skipped, saying why) where the host has no tun device or forbids namespaces.
pub fn private_netns(test: &str) -> bool {
    if !Path::new(TUN_DEVICE).exists() {
        eprintln!("SKIP {test}: this host has no {TUN_DEVICE}");
        return false;
    }
    match unshare(CloneFlags::CLONE_NEWNET) {
        Ok(()) => true,
        Err(Errno::EPERM) => {
            eprintln!("SKIP {test}: not allowed to create a network namespace");
            false
        }
        Err(e) => panic!("unshare(CLONE_NEWNET): {e}"),
    }
}

/// A tap name no other test (in this process or another) uses.
pub fn unique_tap() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("cnt{}-{n}", std::process::id());
    assert!(name.len() <= 15, "{name}");
    name
}

/// Runs `ip <args>`, which must succeed.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Brings `tap` up, IPv6 off (so the kernel sends nothing of its own), with the IPv4
/// address `cidr` if given.
pub fn tap_up(tap: &str, cidr: Option<&str>) {
    // Without IPv6 there are no router solicitations or DAD probes on the tap. Where
    // the kernel has no IPv6 the file does not exist, and nothing is sent anyway.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{tap}/disable_ipv6"), "1");
    if let Some(cidr) = cidr {
        ip(&["addr", "add", cidr, "dev", tap]);
    }
    ip(&["link", "set", "dev", tap, "up"]);
}

/// The host-side MAC address of `tap`.
pub fn tap_mac(tap: &str) -> MacAddr {
    let json = ip(&["-j", "link", "show", "dev", tap]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v[0]["address"].as_str().unwrap().parse().unwrap()
}

/// The interface index of `name` in this thread's namespace, if it exists.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: `c` is a NUL-terminated string that outlives the call, which only reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (index != 0).then_some(index)
}

/// Waits up to 10 s for `cond`; panics naming `what` if it never holds.
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Deletes a persistent tap the test made, even when the test fails.
pub struct PersistentTap(pub String);

impl PersistentTap {
    pub fn create(name: &str) -> PersistentTap {
        ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        PersistentTap(name.to_owned())
    }
}

impl Drop for PersistentTap {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .output();
    }
}

/// A raw AF_PACKET socket bound to an interface: what it sends leaves through that
/// interface, so on a tap it is read by the device.
pub struct PacketSocket(OwnedFd);

impl PacketSocket {
    pub fn bind(ifname: &str) -> PacketSocket {
        let index = ifindex(ifname).expect("the interface exists");
        // SAFETY: socket(2) with constant arguments; it touches no memory of ours.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a socket we just opened and own alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `sockaddr_ll` is plain integers and bytes; all zero bytes is valid.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `addr` is a live `sockaddr_ll` of `len` bytes that bind(2) only reads.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        PacketSocket(fd)
    }

    /// Sends one whole Ethernet frame.
    pub fn send(&self, frame: &[u8]) {
        // SAFETY: the pointer and length describe `frame`, which send(2) only reads.
        let n = unsafe { libc::send(self.0.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }
}
