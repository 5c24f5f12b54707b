//! Seccomp filters, one per kind of thread.
//!
//! A guest that breaks out of a device emulation lands in a thread that can make
//! only the system calls that thread's job needs: no `execve`, no `fork`, no
//! `ptrace` or `mount`, `socket` for unix sockets only, `ioctl` only with the KVM and
//! tun requests the thread uses, no executable memory.
//!
//! - [`prepare`] compiles every filter once, at start, before the VM's threads exist
//!   (and, in [`Mode::Trap`], installs the SIGSYS handler);
//! - each thread installs its own as its first action: [`apply`] with its
//!   [`ThreadKind`]. Without [`prepare`] (the library default, so in-process users
//!   of [`crate::Vmm::start`] are unaffected), or in [`Mode::Off`], that does nothing.
//!
//! A filter is inherited by the threads its thread creates, and stacks with theirs:
//! a call passes only if every filter in the stack allows it. The kinds are built for
//! that ([`ThreadKind::Build`] holds what the threads it starts need).
//!
//! What each kind allows, and why, is in `allowlists.rs`.

mod allowlists;
mod ioctls;
mod rules;
mod sigsys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use seccompiler::{BpfProgram, SeccompAction};

use crate::vstate::kick::kick_signal;

/// The exit status of a process a filter stopped ([`Mode::Trap`]), or whose thread
/// could not install its filter: 128 + SIGSYS, what a shell reports for a process
/// SIGSYS killed.
pub const EXIT_STATUS: u8 = 159;

/// What a filter does with a call its thread may not make.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The call does not happen: a SIGSYS handler names the call and the thread on
    /// stderr and ends the process with [`EXIT_STATUS`].
    #[default]
    Trap,
    /// The call happens, and the kernel logs it (`SECCOMP_RET_LOG`: the audit log or
    /// dmesg, per `/proc/sys/kernel/seccomp/actions_logged`): for finding what a
    /// list lacks.
    Log,
    /// No filters.
    Off,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Trap => "trap",
            Mode::Log => "log",
            Mode::Off => "off",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--seccomp` value that is not `trap`, `log` or `off`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown seccomp mode {0:?} (trap, log or off)")]
pub struct UnknownMode(String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Mode, UnknownMode> {
        match s {
            "trap" => Ok(Mode::Trap),
            "log" => Ok(Mode::Log),
            "off" => Ok(Mode::Off),
            other => Err(UnknownMode(other.to_owned())),
        }
    }
}

/// The kinds of thread, each with its own filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// A vCPU thread: `KVM_RUN`, and the device register handlers that run on it.
    Vcpu,
    /// A device's event loop without host sockets (block, net, fs).
    Device,
    /// The vsock device's event loop: the device list plus the hybrid-vsock host
    /// sockets (accepting, connecting to `<uds>_<port>`, removing its socket).
    Vsock,
    /// The main thread once the VM runs, and the signal and metrics threads.
    Vmm,
    /// The control API thread: serving HTTP on its unix socket, nothing else.
    Api,
    /// The thread that builds and starts the VM (cocoon-vmm's main thread, from
    /// before it starts any thread): what building needs, plus what every thread it
    /// starts needs, since they inherit its filter.
    Build,
}

impl ThreadKind {
    pub const ALL: [ThreadKind; 6] = [
        ThreadKind::Vcpu,
        ThreadKind::Device,
        ThreadKind::Vsock,
        ThreadKind::Vmm,
        ThreadKind::Api,
        ThreadKind::Build,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ThreadKind::Vcpu => "vcpu",
            ThreadKind::Device => "device",
            ThreadKind::Vsock => "vsock",
            ThreadKind::Vmm => "vmm",
            ThreadKind::Api => "api",
            ThreadKind::Build => "build",
        }
    }
}

impl fmt::Display for ThreadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors while preparing or installing filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("compiling the {kind} seccomp filter")]
    Compile {
        kind: ThreadKind,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error("installing the SIGSYS handler")]
    Handler(#[source] nix::Error),
    #[error("seccomp filters were already prepared in {0} mode")]
    AlreadyPrepared(Mode),
    #[error("installing the {kind} seccomp filter")]
    Install {
        kind: ThreadKind,
        #[source]
        source: seccompiler::Error,
    },
}

/// The compiled filters, in [`ThreadKind::ALL`] order (none when off).
struct Prepared {
    mode: Mode,
    programs: Vec<BpfProgram>,
}

static PREPARED: OnceLock<Prepared> = OnceLock::new();

/// Compiles the filters for `mode`, once per process, and in [`Mode::Trap`] installs
/// the SIGSYS handler. Call it before the threads that [`apply`] a filter start.
/// Preparing again in the same mode does nothing; in another, it fails.
pub fn prepare(mode: Mode) -> Result<(), SeccompError> {
    if let Some(p) = PREPARED.get() {
        return same_mode(p, mode);
    }
    let ctx = allowlists::Context {
        pid: std::process::id(),
        kick_signal: kick_signal(),
    };
    let default = match mode {
        Mode::Trap => Some(SeccompAction::Trap),
        Mode::Log => Some(SeccompAction::Log),
        Mode::Off => None,
    };
    let programs = match default {
        None => Vec::new(),
        Some(default) => ThreadKind::ALL
            .into_iter()
            .map(|kind| {
                allowlists::for_kind(kind, &ctx)
                    .compile(default.clone())
                    .map_err(|source| SeccompError::Compile { kind, source })
            })
            .collect::<Result<_, _>>()?,
    };
    if mode == Mode::Trap {
        sigsys::install().map_err(SeccompError::Handler)?;
    }
    match PREPARED.set(Prepared { mode, programs }) {
        Ok(()) => {
            tracing::debug!(%mode, "seccomp filters prepared");
            Ok(())
        }
        // Another thread prepared meanwhile.
        Err(_) => PREPARED.get().map_or(Ok(()), |p| same_mode(p, mode)),
    }
}

fn same_mode(p: &Prepared, mode: Mode) -> Result<(), SeccompError> {
    if p.mode == mode {
        Ok(())
    } else {
        Err(SeccompError::AlreadyPrepared(p.mode))
    }
}

/// The prepared mode: [`Mode::Off`] until [`prepare`] is called.
pub fn mode() -> Mode {
    PREPARED.get().map_or(Mode::Off, |p| p.mode)
}

/// Installs `kind`'s filter on the calling thread, if filters were prepared and are
/// not off. The filter stays for the thread's life.
pub fn try_apply(kind: ThreadKind) -> Result<(), SeccompError> {
    let Some(prepared) = PREPARED.get() else {
        return Ok(());
    };
    let Some(program) = ThreadKind::ALL
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| prepared.programs.get(i))
    else {
        return Ok(());
    };
    sigsys::remember(kind);
    seccompiler::apply_filter(program).map_err(|source| SeccompError::Install { kind, source })
}

/// [`try_apply`] for a thread's first action: a thread that cannot install its
/// filter must not go on unfiltered, so the process ends with [`EXIT_STATUS`],
/// saying why on stderr.
pub fn apply(kind: ThreadKind) {
    if let Err(e) = try_apply(kind) {
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("?");
        let cause = std::error::Error::source(&e).map_or(String::new(), |s| format!(": {s}"));
        eprintln!(
            "cocoon-vmm: seccomp: thread {name:?} could not install its filter: {e}{cause}; \
             exiting with status {EXIT_STATUS}"
        );
        // SAFETY: _exit ends the process at once; unlike exit it is safe while other
        // threads run.
        unsafe { libc::_exit(i32::from(EXIT_STATUS)) }
    }
}
