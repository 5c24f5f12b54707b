//! The host side of the net device: a Linux tap interface.
//!
//! Opened with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`: every frame read or written is
//! preceded by a virtio-net header of [`VNET_HDR_LEN`] bytes (`TUNSETVNETHDRSZ`), the
//! layout the guest uses too. Offloads are switched off (`TUNSETOFFLOAD` 0), so the
//! kernel hands over only complete, fully checksummed frames of at most the tap's MTU
//! plus the Ethernet header.
//!
//! A name that does not exist yet creates a non-persistent tap, which vanishes when
//! the last file descriptor on it closes (this one: dropping the [`Tap`]). An existing
//! persistent tap (one the runtime made in the pod's network namespace, say) is
//! attached as is and outlives us.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::{AsRawFd, RawFd};

use super::VNET_HDR_LEN;

/// The tun/tap control device.
pub const TUN_DEVICE: &str = "/dev/net/tun";
/// Longest interface name (`IFNAMSIZ` less the terminating NUL).
pub const MAX_IFNAME_LEN: usize = libc::IFNAMSIZ - 1;

/// Why a tap could not be opened; each names the interface.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error(
        "tap {0:?}: not an interface name (1 to {MAX_IFNAME_LEN} bytes, no '/', ':', '%' or \
         whitespace, not '.' or '..')"
    )]
    Name(String),
    #[error("tap {0:?}: opening {TUN_DEVICE}")]
    Open(String, #[source] io::Error),
    #[error(
        "tap {0:?}: TUNSETIFF (an existing interface that is no single-queue tap, a tap \
         in use, or one owned by another user?)"
    )]
    SetIff(String, #[source] io::Error),
    #[error("tap {0:?}: TUNSETVNETHDRSZ {VNET_HDR_LEN}")]
    VnetHdrSize(String, #[source] io::Error),
    #[error("tap {0:?}: TUNSETOFFLOAD 0")]
    Offload(String, #[source] io::Error),
}

/// Whether `name` is a name the kernel takes as is for a new interface: 1 to
/// [`MAX_IFNAME_LEN`] bytes, not `.` or `..`, without `/`, `:`, whitespace or NUL
/// (the kernel's rules), nor `%` (which would make it a template like `tap%d`).
pub fn valid_ifname(name: &str) -> bool {
    let bad_char = |c: char| c == '/' || c == ':' || c == '%' || c == '\0' || c.is_whitespace();
    (1..=MAX_IFNAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && !name.contains(bad_char)
}

/// An open, non-blocking tap queue.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Opens (creating if needed) tap `name`, non-blocking, with virtio-net headers of
    /// [`VNET_HDR_LEN`] bytes and no offloads.
    pub fn open(name: &str) -> Result<Tap, TapError> {
        if !valid_ifname(name) {
            return Err(TapError::Name(name.to_owned()));
        }
        let failed =
            |error: fn(String, io::Error) -> TapError| move |source| error(name.to_owned(), source);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(TUN_DEVICE)
            .map_err(failed(TapError::Open))?;
        let fd = file.as_raw_fd();

        // SAFETY: `ifreq` is a plain C struct (a byte array and a union of integers and
        // byte arrays) for which all zero bytes is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // `valid_ifname` keeps the name below IFNAMSIZ, so the last byte stays NUL.
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as _;
        // SAFETY: TUNSETIFF reads and writes one `struct ifreq` at the pointer, which is a
        // live, exclusively borrowed `ifreq` for the whole call; `fd` is our open tun fd.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut ifr as *mut libc::ifreq) };
        check(rc).map_err(failed(TapError::SetIff))?;

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one `int` at the pointer, a live local for the
        // whole call; `fd` is a tun fd attached to a tap by TUNSETIFF above.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ, &hdr_len as *const libc::c_int) };
        check(rc).map_err(failed(TapError::VnetHdrSize))?;

        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned long of TUN_F_*
        // flags) and touches no memory of ours; `fd` is an attached tun fd.
        let rc = unsafe { libc::ioctl(fd, libc::TUNSETOFFLOAD, 0 as libc::c_ulong) };
        check(rc).map_err(failed(TapError::Offload))?;

        Ok(Tap {
            file,
            name: name.to_owned(),
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one frame (header included) into `buf`; `WouldBlock` when none is queued.
    /// `buf` should hold the largest frame the tap's MTU allows (at most 65535 plus
    /// the Ethernet and VLAN headers) and the header.
    pub fn read_frame(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header included) in one write.
    pub fn write_frame(&self, buf: &[u8]) -> io::Result<usize> {
        (&self.file).write(buf)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        for good in ["tap0", "a", "cocoon-tap-0001", "eth.1"] {
            assert!(valid_ifname(good), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            "cocoon-tap-00001",
            "a/b",
            "a:b",
            "tap%d",
            "a b",
            "a\tb",
            "a\0",
        ] {
            assert!(!valid_ifname(bad), "{bad:?}");
        }
        let err = Tap::open("far-too-long-name").unwrap_err();
        assert!(err.to_string().contains("far-too-long-name"), "{err}");
    }
}
