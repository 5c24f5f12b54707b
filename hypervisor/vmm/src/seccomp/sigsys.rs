//! `--seccomp trap`: the SIGSYS handler that reports a forbidden call and ends the
//! process.
//!
//! The handler runs on the offending thread, inside a filter that allows little, so
//! it only reads a thread-local filled in when the thread installed its filter,
//! formats into a stack buffer, `write`s to stderr and `_exit`s: all async-signal-safe
//! and all allowed by every filter.

use std::cell::Cell;

use libc::{c_int, c_uint, c_void, siginfo_t};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::{ThreadKind, EXIT_STATUS};

/// Longest thread name kept (Linux's own limit is 15 bytes).
const NAME_MAX: usize = 32;

/// Who this thread is, as recorded by [`remember`].
#[derive(Clone, Copy)]
struct Tag {
    name: [u8; NAME_MAX],
    len: u8,
    kind: Option<ThreadKind>,
}

thread_local! {
    /// Const-initialized, `Copy`, no destructor: reading it from a signal handler
    /// allocates nothing and runs no lazy initialization.
    static TAG: Cell<Tag> = const {
        Cell::new(Tag { name: [0; NAME_MAX], len: 0, kind: None })
    };
}

/// Records the calling thread's name and filter for the handler.
pub(super) fn remember(kind: ThreadKind) {
    let mut tag = Tag {
        name: [0; NAME_MAX],
        len: 0,
        kind: Some(kind),
    };
    if let Some(name) = std::thread::current().name() {
        let n = name.len().min(NAME_MAX);
        tag.name[..n].copy_from_slice(&name.as_bytes()[..n]);
        tag.len = n as u8;
    }
    TAG.with(|t| t.set(tag));
}

/// Installs the handler for the whole process.
pub(super) fn install() -> nix::Result<()> {
    let action = SigAction::new(
        SigHandler::SigAction(on_sigsys),
        SaFlags::SA_SIGINFO,
        SigSet::empty(),
    );
    // SAFETY: the handler only does async-signal-safe things (see the module doc),
    // and replacing SIGSYS's default disposition affects nothing else.
    unsafe { sigaction(Signal::SIGSYS, &action) }.map(drop)
}

/// `si_code` of a SIGSYS raised by a seccomp filter.
const SYS_SECCOMP: c_int = 1;

/// The head of `siginfo_t` as the kernel fills it for SIGSYS (`_sigsys` in
/// `<asm-generic/siginfo.h>`, 64-bit: the union starts at offset 16).
#[repr(C)]
struct SigsysInfo {
    signo: c_int,
    errno: c_int,
    code: c_int,
    _pad: c_int,
    call_addr: *mut c_void,
    syscall: c_int,
    arch: c_uint,
}

const _: () = assert!(std::mem::size_of::<SigsysInfo>() <= std::mem::size_of::<siginfo_t>());

extern "C" fn on_sigsys(_signo: c_int, info: *mut siginfo_t, _ctx: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an SA_SIGINFO handler, and
    // `SigsysInfo` is a prefix of it (checked above) with the kernel's layout.
    let (code, nr) = unsafe {
        let info = &*(info as *const SigsysInfo);
        (info.code, info.syscall)
    };
    let tag = TAG.with(Cell::get);
    let mut msg = Message::new();
    report(&mut msg, &tag, (code == SYS_SECCOMP).then_some(nr));
    // SAFETY: write(2) on stderr from a buffer that lives on this stack; its result
    // does not matter, the process ends next.
    unsafe { libc::write(libc::STDERR_FILENO, msg.as_ptr(), msg.len()) };
    // SAFETY: _exit ends the process at once, without running anything else.
    unsafe { libc::_exit(c_int::from(EXIT_STATUS)) }
}

/// The report: which thread, which filter, which call (`None`: a SIGSYS from
/// elsewhere, `kill` say), and the exit status.
fn report(msg: &mut Message, tag: &Tag, syscall: Option<c_int>) {
    msg.push(b"cocoon-vmm: seccomp: thread \"");
    msg.push(if tag.len == 0 {
        b"?"
    } else {
        &tag.name[..usize::from(tag.len)]
    });
    msg.push(b"\"");
    if let Some(kind) = tag.kind {
        msg.push(b" (");
        msg.push(kind.name().as_bytes());
        msg.push(b" filter)");
    }
    match syscall {
        Some(nr) => {
            msg.push(b" made a forbidden system call: ");
            let name = usize::try_from(nr).ok().and_then(syscalls::Sysno::new);
            msg.push(name.map_or("unknown", |s| s.name()).as_bytes());
            msg.push(b" (");
            msg.push_decimal(i64::from(nr));
            msg.push(b")");
        }
        None => msg.push(b" got a SIGSYS that no filter raised"),
    }
    msg.push(b"; exiting with status ");
    msg.push_decimal(i64::from(EXIT_STATUS));
    msg.push(b"\n");
}

/// A line built without allocating; what does not fit is cut (the newline kept).
struct Message {
    buf: [u8; 256],
    len: usize,
}

impl Message {
    fn new() -> Message {
        Message {
            buf: [0; 256],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.buf.len() - 1 - self.len.min(self.buf.len() - 1);
        let n = bytes.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        if bytes.ends_with(b"\n") && n < bytes.len() && self.len < self.buf.len() {
            self.buf[self.len] = b'\n';
            self.len += 1;
        }
    }

    fn push_decimal(&mut self, v: i64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut rest = v.unsigned_abs();
        loop {
            i -= 1;
            digits[i] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if v < 0 {
            self.push(b"-");
        }
        self.push(&digits[i..]);
    }

    fn as_ptr(&self) -> *const c_void {
        self.buf.as_ptr().cast()
    }

    fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn text(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(name: &str, kind: Option<ThreadKind>) -> Tag {
        let mut t = Tag {
            name: [0; NAME_MAX],
            len: name.len() as u8,
            kind,
        };
        t.name[..name.len()].copy_from_slice(name.as_bytes());
        t
    }

    #[test]
    fn the_report_names_thread_filter_and_call() {
        let mut m = Message::new();
        report(&mut m, &tag("vcpu0", Some(ThreadKind::Vcpu)), Some(59));
        assert_eq!(
            m.text(),
            "cocoon-vmm: seccomp: thread \"vcpu0\" (vcpu filter) made a forbidden system \
             call: execve (59); exiting with status 159\n"
        );
        let mut m = Message::new();
        report(&mut m, &tag("", None), Some(100_000));
        assert!(m
            .text()
            .contains("thread \"?\" made a forbidden system call: unknown (100000)"));
        let mut m = Message::new();
        report(&mut m, &tag("x", None), None);
        assert!(m.text().contains("no filter raised"), "{}", m.text());
    }

    #[test]
    fn long_messages_are_cut_but_end_the_line() {
        let mut m = Message::new();
        m.push(&[b'a'; 300]);
        m.push(b"tail\n");
        assert_eq!(m.len(), 256);
        assert!(m.text().ends_with("a\n"));
        m.push(b"more\n");
        assert_eq!(m.len(), 256, "a full line takes nothing more");
        let mut m = Message::new();
        m.push_decimal(-42);
        m.push_decimal(0);
        assert_eq!(m.text(), "-420");
    }

    #[test]
    fn remember_keeps_the_thread_name() {
        std::thread::Builder::new()
            .name("a-device-thread".into())
            .spawn(|| {
                remember(ThreadKind::Device);
                let t = TAG.with(Cell::get);
                assert_eq!(&t.name[..usize::from(t.len)], b"a-device-thread");
                assert_eq!(t.kind, Some(ThreadKind::Device));
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
