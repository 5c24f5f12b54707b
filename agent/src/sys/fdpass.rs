//! Receiving a descriptor over a unix socket (SCM_RIGHTS): how libcontainer hands over
//! the master side of a container's terminal (the OCI "console socket").

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Receives one message on `sock` and returns the first descriptor it carries; any
/// further descriptors are closed.
pub fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 4]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: SCM_RIGHTS just installed `fd` in our table; nothing else
                // knows it, so this is its only owner.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    received
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no descriptor in the message"))
}

/// Most descriptors [`recv_with_fds`] accepts in one message.
pub const MAX_FDS: usize = 8;

/// One received message: its length, whether it (or its descriptors) were cut, and its
/// descriptors (close-on-exec).
pub struct Received {
    pub len: usize,
    pub truncated: bool,
    pub fds: Vec<OwnedFd>,
}

/// Receives one message with its descriptors on `sock`, retrying on EINTR.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<Received> {
    loop {
        let mut iov = [IoSliceMut::new(buf)];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let msg = match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        {
            Ok(m) => m,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS just installed `fd` in our table; nothing
                    // else knows it, so this is its only owner.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        return Ok(Received {
            len: msg.bytes,
            truncated: msg
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC),
            fds,
        });
    }
}

/// Sends `data` with `fds` as one message on `sock`, without blocking (EAGAIN when the
/// socket is full) and without SIGPIPE.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage};
    let iov = [std::io::IoSlice::new(data)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let sent = sendmsg::<()>(
        sock,
        &iov,
        &cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    if sent != data.len() {
        return Err(std::io::Error::other("message cut short"));
    }
    Ok(())
}
