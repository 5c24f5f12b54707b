//! What each kind of thread may call, and which code path needs it.
//!
//! The lists come from tracing the VMM's threads (`strace -f` over the integration
//! tests and the `cocoon-vmm` binary), plus the documented needs of the devices
//! being added beside the ones traced (virtio-blk, virtio-net, virtio-fs over
//! vhost-user, the control API, vCPU pause/resume). A call a list lacks ends the VMM
//! under `--seccomp trap`, naming the call and the thread: add it here, to the list
//! of the thread that made it, with the code path that needs it.
//!
//! A thread's filter is inherited by the threads it creates and stacks with the
//! filter they add, so the thread that creates the others ([`ThreadKind::Build`])
//! must allow everything they will do too.

use super::ioctls as io;
use super::rules::{Allowlist, Cond};
use super::ThreadKind;

/// Facts of this process the filters pin arguments to.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// This process's id: `tgkill` may only signal its own threads.
    pub pid: u32,
    /// The signal that kicks vCPU threads out of `KVM_RUN`.
    pub kick_signal: libc::c_int,
}

/// The allowlist of `kind`.
pub fn for_kind(kind: ThreadKind, ctx: &Context) -> Allowlist {
    match kind {
        ThreadKind::Vcpu => vcpu(ctx),
        ThreadKind::Device => device(ctx),
        ThreadKind::Vsock => vsock(ctx),
        ThreadKind::Vmm => vmm(ctx),
        ThreadKind::Api => api(ctx),
        ThreadKind::Build => build(ctx),
    }
}

/// What every thread does, whatever its job: Rust's standard library and glibc.
fn runtime(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = Allowlist::new();
    a
        // Allocation (malloc arenas, large blocks, thread stacks freed at exit);
        // never executable memory.
        .allow(&[SYS_brk, SYS_munmap, SYS_mremap, SYS_madvise])
        .allow_if(SYS_mmap, &[Cond::Clear(2, PROT_EXEC as u64)])
        .allow_if(SYS_mprotect, &[Cond::Clear(2, PROT_EXEC as u64)])
        // Mutexes, condvars, channels, parking, joins; spin loops.
        .allow(&[SYS_futex, SYS_sched_yield])
        // Time (vDSO fallbacks), sleeps (the vCPU stop loop backs off), timeouts.
        .allow(&[
            SYS_clock_gettime,
            SYS_gettimeofday,
            SYS_clock_nanosleep,
            SYS_nanosleep,
        ])
        // Each thread's first HashMap seeds its keys.
        .allow(&[SYS_getrandom])
        // Thread exit: std drops its stack-overflow handler (sigaltstack, munmap),
        // glibc blocks signals (rt_sigprocmask) and frees the stack (madvise); the
        // vCPU kick handler returns through rt_sigreturn.
        .allow(&[SYS_rt_sigprocmask, SYS_rt_sigreturn, SYS_sigaltstack])
        .allow(&[SYS_exit, SYS_exit_group])
        // abort() (panic = "abort" in release builds) and pthread_kill (vCPU kicks):
        // only this process's threads, only SIGABRT and the kick signal.
        .allow(&[SYS_gettid, SYS_getpid])
        .allow_if(
            SYS_tgkill,
            &[Cond::Eq(0, u64::from(ctx.pid)), Cond::Eq(2, SIGABRT as u64)],
        )
        .allow_if(
            SYS_tgkill,
            &[
                Cond::Eq(0, u64::from(ctx.pid)),
                Cond::Eq(2, ctx.kick_signal as u64),
            ],
        )
        // Logs to stderr (tracing), eventfds (interrupts, kicks, stop events), and
        // closing whatever a thread owns when it ends; std's debug builds check an
        // fd is open before closing it (F_GETFD).
        .allow(&[SYS_read, SYS_write, SYS_close])
        .allow_arg_in(SYS_fcntl, 1, &[F_GETFD as u64]);
    a
}

/// A vCPU thread: `KVM_RUN` and the devices' register handlers, which run on it.
fn vcpu(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = runtime(ctx);
    a
        // The run loop; KVM_GET_REGS for the crash report of an internal error.
        .allow_ioctls(&[io::KVM_RUN, io::KVM_GET_REGS])
        // Handlers (in the runtime list): serial output (write to its file or
        // stdout), interrupts and device kicks (eventfd writes), virtio-rng
        // (read from /dev/urandom, opened at build).
        //
        // Virtio-fs activation (vhost-user frontend): messages to the backend on
        // its unix socket, with fds (memory, vring eventfds) as SCM_RIGHTS; it may
        // create its vring eventfds then, and hangs up on a backend that failed.
        // Each exchange arms and disarms the device's watchdog (a mutex and a
        // condvar: futex, and clock_gettime for the deadline, in the runtime list).
        .allow(&[SYS_sendmsg, SYS_recvmsg, SYS_eventfd2, SYS_shutdown]);
    a
}

/// A device's event-loop thread without host sockets (block, net, fs).
fn device(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = runtime(ctx);
    a
        // The loop: its epoll set is made on the thread.
        .allow(&[
            SYS_epoll_create1,
            SYS_epoll_ctl,
            SYS_epoll_wait,
            SYS_epoll_pwait,
        ])
        // O_NONBLOCK the fcntl way (a tap, a vhost-user socket).
        .allow_arg_in(SYS_fcntl, 1, &[F_GETFL as u64, F_SETFL as u64])
        // Virtio-net: frames to and from the tap (plain and vectored; the tap was
        // opened and configured while the VM was built).
        .allow(&[SYS_readv, SYS_writev])
        // Virtio-blk: the image's reads, writes and flushes, and its lock.
        .allow(&[
            SYS_pread64,
            SYS_pwrite64,
            SYS_preadv,
            SYS_pwritev,
            SYS_fsync,
            SYS_fdatasync,
            SYS_flock,
        ])
        // Virtio-fs: the call eventfds it forwards (read/write, in the runtime list),
        // vhost-user messages should the backend speak first, and the hang-up when
        // the thread ends (shutdown). Its watchdog thread (`fs/watchdog.rs`, this
        // kind too) waits on a condvar until an exchange's deadline (futex,
        // clock_gettime: runtime list) and then hangs up on the backend (shutdown).
        .allow(&[SYS_sendmsg, SYS_recvmsg, SYS_shutdown]);
    a
}

/// The vsock device's event loop: a device thread with host sockets.
fn vsock(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = device(ctx);
    a
        // Connection and handshake timeouts.
        .allow(&[SYS_timerfd_settime])
        // Hybrid vsock: accepting host connections (set non-blocking: FIONBIO),
        // connecting to `<uds>_<port>` for the guest (a unix socket only), the
        // streams' traffic and half-closes; the socket file is removed when the
        // loop ends.
        .allow(&[
            SYS_accept4,
            SYS_connect,
            SYS_recvfrom,
            SYS_sendto,
            SYS_unlink,
        ])
        .allow_if(SYS_socket, &[Cond::Eq(0, AF_UNIX as u64)])
        .allow_ioctls(&[io::FIONBIO]);
    a
}

/// The main thread once the VM runs, and the small signal and metrics threads.
fn vmm(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = runtime(ctx);
    a
        // Waiting (futex), stopping the vCPUs (tgkill, sleeps) and the device threads
        // (eventfd write, join), dropping the VM (close, munmap): all in the runtime
        // list. The signal thread reads its signalfd (read).
        //
        // The metrics file, replaced atomically: create a temporary (File::create's
        // flags only: nothing is opened for reading), write it, rename it over the
        // old one.
        .allow_if(
            SYS_openat,
            &[Cond::Eq(
                2,
                (O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC) as u64,
            )],
        )
        .allow(&[SYS_rename]);
    a
}

/// The control API thread: one blocking HTTP server on its unix socket. Pausing and
/// resuming kick the vCPUs (tgkill, in the runtime list) and wait for them (futex).
fn api(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = runtime(ctx);
    a
        // Waiting for a connection or its stop event, accepting it, its timeouts,
        // reading the request and writing the answer, closing it.
        .allow(&[
            SYS_poll,
            SYS_ppoll,
            SYS_accept4,
            SYS_setsockopt,
            SYS_getsockopt,
            SYS_recvfrom,
            SYS_sendto,
            SYS_shutdown,
        ])
        .allow_ioctls(&[io::FIONBIO])
        .allow_arg_in(SYS_fcntl, 1, &[F_GETFL as u64, F_SETFL as u64])
        // Removing its socket when it ends, if the file is still the one it bound.
        .allow(&[SYS_newfstatat, SYS_statx, SYS_unlink]);
    a
}

/// The thread that builds and starts the VM (cocoon-vmm's main thread from before
/// it starts any thread, or whatever thread calls [`crate::Vmm::start`] with filters
/// on): what building needs and, because the threads it starts inherit its filter,
/// everything they do.
fn build(ctx: &Context) -> Allowlist {
    use libc::*;
    let mut a = Allowlist::new();
    a.extend(&vcpu(ctx))
        .extend(&vsock(ctx))
        .extend(&vmm(ctx))
        .extend(&api(ctx));
    a
        // Starting threads: `clone` with CLONE_THREAD only (no fork); clone3 fails
        // with ENOSYS so glibc uses clone. Then, in the new thread before its own
        // filter: glibc's setup (robust list, rseq, signal mask), std's (thread
        // name, stack guard query, sigaltstack), and installing its filter
        // (no_new_privs, seccomp: which can only narrow what is allowed).
        .allow_if(SYS_clone, &[Cond::Set(0, CLONE_THREAD as u64)])
        .refuse_clone3()
        .allow(&[SYS_set_robust_list, SYS_rseq, SYS_sched_getaffinity])
        .allow_arg_in(
            SYS_prctl,
            0,
            &[PR_SET_NAME as u64, PR_SET_NO_NEW_PRIVS as u64],
        )
        .allow_arg_in(SYS_seccomp, 0, &[SECCOMP_SET_MODE_FILTER as u64])
        // Building: the vCPU kick handler, files (kernel, initrd, serial log,
        // /dev/kvm, /dev/urandom, /dev/net/tun, disk images), their sizes.
        .allow(&[
            SYS_rt_sigaction,
            SYS_openat,
            SYS_lseek,
            SYS_fstat,
            SYS_newfstatat,
            SYS_statx,
        ])
        .allow_arg_in(
            SYS_fcntl,
            1,
            &[
                F_DUPFD_CLOEXEC as u64,
                F_GETFD as u64,
                F_SETFD as u64,
                F_GETFL as u64,
                F_SETFL as u64,
                // Sealing the memfd of shareable guest memory (virtio-fs).
                F_ADD_SEALS as u64,
                F_GET_SEALS as u64,
            ],
        )
        // Duplicating fds handed to devices (the vhost-user socket, eventfds).
        .allow(&[SYS_dup])
        // KVM: the VM, its memory, irqchip, PIT, vCPUs and their boot state, irqfds
        // and ioeventfds.
        .allow_ioctls(&[
            io::KVM_CREATE_VM,
            io::KVM_CHECK_EXTENSION,
            io::KVM_GET_VCPU_MMAP_SIZE,
            io::KVM_GET_SUPPORTED_CPUID,
            io::KVM_CREATE_VCPU,
            io::KVM_SET_USER_MEMORY_REGION,
            io::KVM_SET_TSS_ADDR,
            io::KVM_CREATE_IRQCHIP,
            io::KVM_IRQFD,
            io::KVM_CREATE_PIT2,
            io::KVM_IOEVENTFD,
            io::KVM_SET_REGS,
            io::KVM_GET_SREGS,
            io::KVM_SET_SREGS,
            io::KVM_SET_MSRS,
            io::KVM_SET_FPU,
            io::KVM_GET_LAPIC,
            io::KVM_SET_LAPIC,
            io::KVM_SET_CPUID2,
        ])
        // Devices: eventfds, the vsock listener (bind, listen; a stale socket
        // refused by unlink), virtio-net's tap (opened and configured here, so
        // its device thread needs no TUNSETIFF), virtio-fs's backend socket
        // (connect, in the device list) and its shareable guest memory.
        .allow(&[
            SYS_eventfd2,
            SYS_timerfd_create,
            SYS_bind,
            SYS_listen,
            SYS_memfd_create,
            SYS_ftruncate,
        ])
        .allow_ioctls(&[
            io::TUNSETIFF,
            io::TUNGETIFF,
            io::TUNGETFEATURES,
            io::TUNSETVNETHDRSZ,
            io::TUNSETOFFLOAD,
        ])
        // Binding the control API socket (umask around bind; a live server there is
        // probed with connect, a stale socket removed) and the API thread's stop
        // pair.
        .allow(&[SYS_umask])
        .allow_if(SYS_socketpair, &[Cond::Eq(0, AF_UNIX as u64)]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Context {
        Context {
            pid: 1234,
            kick_signal: 34,
        }
    }

    const FORBIDDEN: [libc::c_long; 9] = [
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_fork,
        libc::SYS_vfork,
        libc::SYS_ptrace,
        libc::SYS_mount,
        libc::SYS_clone3,
        libc::SYS_kill,
        libc::SYS_process_vm_writev,
    ];

    #[test]
    fn no_kind_allows_exec_fork_ptrace_or_mount() {
        for kind in ThreadKind::ALL {
            let a = for_kind(kind, &ctx());
            for nr in FORBIDDEN {
                assert!(!a.mentions(nr), "{kind} allows syscall {nr}");
            }
            assert!(
                !a.allows_always(libc::SYS_socket),
                "{kind}: socket is unix only"
            );
            assert!(!a.allows_always(libc::SYS_ioctl), "{kind}: ioctl is pinned");
            assert!(!a.allows_always(libc::SYS_mmap), "{kind}: no PROT_EXEC");
            assert!(
                !a.allows_always(libc::SYS_tgkill),
                "{kind}: own threads only"
            );
        }
    }

    #[test]
    fn only_the_build_thread_starts_threads_or_builds() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::Device,
            ThreadKind::Vsock,
            ThreadKind::Vmm,
            ThreadKind::Api,
        ] {
            let a = for_kind(kind, &ctx());
            assert!(!a.mentions(libc::SYS_clone), "{kind}");
            assert!(!a.allows_with(
                libc::SYS_ioctl,
                &[Cond::Eq(1, u64::from(io::KVM_CREATE_VM))]
            ));
            assert!(!a.allows_with(libc::SYS_ioctl, &[Cond::Eq(1, u64::from(io::TUNSETIFF))]));
        }
        let build = for_kind(ThreadKind::Build, &ctx());
        assert!(build.allows_with(libc::SYS_clone, &[Cond::Set(0, libc::CLONE_THREAD as u64)]));
        assert!(!build.allows_always(libc::SYS_clone));
    }

    /// Only the vsock thread has host sockets to open, connect and remove; the
    /// other device threads and the API thread cannot reach another socket.
    #[test]
    fn only_vsock_connects_or_unlinks() {
        for kind in [
            ThreadKind::Vcpu,
            ThreadKind::Device,
            ThreadKind::Vmm,
            ThreadKind::Api,
        ] {
            let a = for_kind(kind, &ctx());
            assert!(!a.mentions(libc::SYS_connect), "{kind}");
            assert!(!a.mentions(libc::SYS_socket), "{kind}");
        }
        for kind in [ThreadKind::Vcpu, ThreadKind::Device, ThreadKind::Vmm] {
            assert!(!for_kind(kind, &ctx()).mentions(libc::SYS_unlink), "{kind}");
        }
        let vsock = for_kind(ThreadKind::Vsock, &ctx());
        assert!(vsock.mentions(libc::SYS_connect));
    }

    #[test]
    fn kvm_run_is_for_vcpus_and_the_threads_that_start_them() {
        let run = [Cond::Eq(1, u64::from(io::KVM_RUN))];
        let allows = |k| for_kind(k, &ctx()).allows_with(libc::SYS_ioctl, &run);
        assert!(allows(ThreadKind::Vcpu));
        assert!(allows(ThreadKind::Build));
        assert!(!allows(ThreadKind::Device));
        assert!(!allows(ThreadKind::Vsock));
        assert!(!allows(ThreadKind::Vmm));
        assert!(!allows(ThreadKind::Api));
    }

    /// A thread's filter stacks on its creator's: the build thread's list must hold
    /// every other list, or the threads it starts would die.
    #[test]
    fn build_holds_every_other_list() {
        let build = for_kind(ThreadKind::Build, &ctx());
        for kind in ThreadKind::ALL {
            let mut both = build.clone();
            both.extend(&for_kind(kind, &ctx()));
            assert_eq!(both, build, "build lacks something {kind} needs");
        }
    }

    #[test]
    fn sockets_are_unix_only_and_signals_stay_in_the_process() {
        for kind in [ThreadKind::Vsock, ThreadKind::Build] {
            let a = for_kind(kind, &ctx());
            let unix = [Cond::Eq(0, libc::AF_UNIX as u64)];
            assert!(a.allows_with(libc::SYS_socket, &unix), "{kind}");
            let inet = [Cond::Eq(0, libc::AF_INET as u64)];
            assert!(!a.allows_with(libc::SYS_socket, &inet), "{kind}");
        }
        let a = for_kind(ThreadKind::Vmm, &ctx());
        let kick = [Cond::Eq(0, 1234), Cond::Eq(2, 34)];
        assert!(a.allows_with(libc::SYS_tgkill, &kick));
        let other_process = [Cond::Eq(0, 1), Cond::Eq(2, 34)];
        assert!(!a.allows_with(libc::SYS_tgkill, &other_process));
    }

    #[test]
    fn every_list_compiles() {
        for kind in ThreadKind::ALL {
            let program = for_kind(kind, &ctx())
                .compile(seccompiler::SeccompAction::Trap)
                .unwrap();
            assert!(
                program.len() < 4096,
                "{kind}: {} instructions",
                program.len()
            );
        }
    }
}
