//! Filters installed for real. A filter cannot be taken off again and [`prepare`] is
//! once per process, so each test runs itself again in a child process (this test
//! binary, only that test, with `COCOON_SECCOMP_CHILD` naming the scenario): the
//! child installs a filter on a thread and makes its calls; the parent checks how
//! the child ended and what it wrote to stderr.

use std::ffi::CString;
use std::process::{Command, Output};
use std::ptr;

use super::*;
use crate::seccomp::ioctls::{KVM_CREATE_VM, KVM_RUN};

const CHILD: &str = "COCOON_SECCOMP_CHILD";

/// The scenario this process runs, when it is a child.
fn scenario() -> Option<String> {
    std::env::var(CHILD).ok()
}

/// Runs test `name` of this module again in a child process, as scenario `what`.
fn child(name: &str, what: &str) -> Output {
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, m)| m);
    Command::new(std::env::current_exe().unwrap())
        .args([
            &format!("{module}::{name}"),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, what)
        .output()
        .unwrap()
}

/// In a child: prepares `mode`, then runs `body` on a thread called "probe" whose
/// first action is installing `kind`'s filter.
fn probe(mode: Mode, kind: ThreadKind, body: impl FnOnce() + Send + 'static) {
    prepare(mode).unwrap();
    std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || {
            try_apply(kind).unwrap();
            body();
        })
        .unwrap()
        .join()
        .unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The child ended in the SIGSYS handler, which named `call` and `kind`'s filter.
fn assert_trapped(out: &Output, kind: ThreadKind, call: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(i32::from(EXIT_STATUS)),
        "{kind}/{call}: {:?}; stderr:\n{err}",
        out.status
    );
    let line = format!(
        "cocoon-vmm: seccomp: thread \"probe\" ({kind} filter) made a forbidden system call: \
         {call}; exiting with status 159"
    );
    assert!(err.contains(&line), "wanted {line:?} in:\n{err}");
}

fn assert_clean(out: &Output) -> String {
    let err = stderr(out);
    assert!(out.status.success(), "{:?}; stderr:\n{err}", out.status);
    assert!(!err.contains("cocoon-vmm: seccomp"), "{err}");
    err
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn execve_true() {
    let path = CString::new("/bin/true").unwrap();
    let argv = [path.as_ptr(), ptr::null()];
    let envp = [ptr::null()];
    // SAFETY: NUL-terminated path and argv/envp arrays that live across the call. Had
    // it been allowed, the process would become /bin/true and exit 0.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
}

fn socket(domain: libc::c_int) -> libc::c_int {
    // SAFETY: plain syscall; the fd, if any, is closed when the process ends.
    unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) }
}

/// `ioctl(-1, request)`: EBADF if a filter lets it through.
fn ioctl_bad_fd(request: u32) -> (libc::c_int, i32) {
    // SAFETY: an invalid fd: the kernel fails the call before looking at anything.
    let rc = unsafe { libc::ioctl(-1, libc::c_ulong::from(request)) };
    (rc, errno())
}

#[test]
fn every_kind_traps_execve() {
    if let Some(kind) = scenario() {
        let kind = *ThreadKind::ALL.iter().find(|k| k.name() == kind).unwrap();
        return probe(Mode::Trap, kind, execve_true);
    }
    for kind in ThreadKind::ALL {
        assert_trapped(
            &child("every_kind_traps_execve", kind.name()),
            kind,
            "execve (59)",
        );
    }
}

#[test]
fn the_vsock_thread_gets_unix_sockets_only() {
    if scenario().is_some() {
        return probe(Mode::Trap, ThreadKind::Vsock, || {
            let fd = socket(libc::AF_UNIX);
            eprintln!("unix socket: {}", if fd >= 0 { "ok" } else { "failed" });
            socket(libc::AF_INET);
        });
    }
    let out = child("the_vsock_thread_gets_unix_sockets_only", "run");
    assert_trapped(&out, ThreadKind::Vsock, "socket (41)");
    assert!(stderr(&out).contains("unix socket: ok"), "{}", stderr(&out));
}

#[test]
fn vcpu_threads_get_kvm_run_but_not_other_kvm_ioctls() {
    if scenario().is_some() {
        return probe(Mode::Trap, ThreadKind::Vcpu, || {
            let (rc, e) = ioctl_bad_fd(KVM_RUN);
            eprintln!("KVM_RUN: rc {rc} errno {e}");
            ioctl_bad_fd(KVM_CREATE_VM);
        });
    }
    let out = child("vcpu_threads_get_kvm_run_but_not_other_kvm_ioctls", "run");
    assert_trapped(&out, ThreadKind::Vcpu, "ioctl (16)");
    let ebadf = format!("KVM_RUN: rc -1 errno {}", libc::EBADF);
    assert!(stderr(&out).contains(&ebadf), "{}", stderr(&out));
}

#[test]
fn the_vmm_thread_may_not_ptrace() {
    if scenario().is_some() {
        return probe(Mode::Trap, ThreadKind::Vmm, || {
            // SAFETY: PTRACE_TRACEME takes no pointers.
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, ptr::null_mut::<u8>(), 0) };
        });
    }
    let out = child("the_vmm_thread_may_not_ptrace", "run");
    assert_trapped(&out, ThreadKind::Vmm, "ptrace (101)");
}

#[test]
fn no_thread_maps_executable_memory() {
    if scenario().is_some() {
        return probe(Mode::Trap, ThreadKind::Device, || {
            let map = |prot| {
                // SAFETY: a fresh anonymous mapping, never used, left to the process's end.
                unsafe {
                    libc::mmap(
                        ptr::null_mut(),
                        4096,
                        prot,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                }
            };
            let rw = map(libc::PROT_READ | libc::PROT_WRITE);
            eprintln!("rw mapping: {}", rw != libc::MAP_FAILED);
            map(libc::PROT_READ | libc::PROT_EXEC);
        });
    }
    let out = child("no_thread_maps_executable_memory", "run");
    assert_trapped(&out, ThreadKind::Device, "mmap (9)");
    assert!(
        stderr(&out).contains("rw mapping: true"),
        "{}",
        stderr(&out)
    );
}

/// The build thread starts threads (clone3 fails with ENOSYS, glibc falls back to
/// clone with CLONE_THREAD), which stack their own filter on its; it cannot fork.
#[test]
fn the_build_thread_starts_threads_but_cannot_fork() {
    if scenario().is_some() {
        return probe(Mode::Trap, ThreadKind::Build, || {
            // SAFETY: clone3 with no arguments struct: ENOSYS from the filter, or
            // EFAULT/EINVAL from the kernel had the filter let it through.
            let rc = unsafe { libc::syscall(libc::SYS_clone3, ptr::null::<u8>(), 0usize) };
            eprintln!("clone3: rc {rc} errno {}", errno());
            let vcpu = std::thread::Builder::new()
                .name("vcpu-like".into())
                .spawn(|| {
                    try_apply(ThreadKind::Vcpu).unwrap();
                    ioctl_bad_fd(KVM_RUN).1
                })
                .unwrap();
            eprintln!("stacked KVM_RUN errno {}", vcpu.join().unwrap());
            // SAFETY: fork in a test child; had it been allowed, the new process
            // leaves at once and this one goes on to exit 0.
            if unsafe { libc::fork() } == 0 {
                // SAFETY: leaving the forked copy without running anything.
                unsafe { libc::_exit(0) };
            }
        });
    }
    let out = child("the_build_thread_starts_threads_but_cannot_fork", "run");
    assert_trapped(&out, ThreadKind::Build, "clone (56)");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("clone3: rc -1 errno {}", libc::ENOSYS)),
        "{err}"
    );
    assert!(
        err.contains(&format!("stacked KVM_RUN errno {}", libc::EBADF)),
        "{err}"
    );
}

#[test]
fn log_mode_lets_forbidden_calls_through() {
    if scenario().is_some() {
        return probe(Mode::Log, ThreadKind::Vcpu, || {
            let fd = socket(libc::AF_INET);
            eprintln!("inet socket under log: {}", fd >= 0);
        });
    }
    let err = assert_clean(&child("log_mode_lets_forbidden_calls_through", "run"));
    assert!(err.contains("inet socket under log: true"), "{err}");
}

#[test]
fn off_installs_nothing_and_modes_do_not_mix() {
    if scenario().is_some() {
        assert_eq!(mode(), Mode::Off, "off until prepared");
        probe(Mode::Off, ThreadKind::Vcpu, || {
            let fd = socket(libc::AF_INET);
            eprintln!("inet socket when off: {}", fd >= 0);
        });
        prepare(Mode::Off).unwrap();
        assert!(matches!(
            prepare(Mode::Trap),
            Err(SeccompError::AlreadyPrepared(Mode::Off))
        ));
        eprintln!("modes checked");
        return;
    }
    let err = assert_clean(&child("off_installs_nothing_and_modes_do_not_mix", "run"));
    assert!(err.contains("inet socket when off: true"), "{err}");
    assert!(err.contains("modes checked"), "{err}");
}

#[test]
fn modes_parse_and_print() {
    for mode in [Mode::Trap, Mode::Log, Mode::Off] {
        assert_eq!(mode.to_string().parse::<Mode>(), Ok(mode));
    }
    assert_eq!(Mode::default(), Mode::Trap);
    assert!("kill".parse::<Mode>().is_err());
}
