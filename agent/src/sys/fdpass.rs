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
