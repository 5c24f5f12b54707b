//! `cocoon-vmm`: runs one VM in this process and exits when it ends.
//!
//! Exit status:
//! - 0: the guest ended the VM (reset, triple fault, power-off: a microVM exits
//!   instead of rebooting);
//! - 1: bad arguments, or the VM could not be built (the error is on stderr);
//! - 2: a vCPU crashed (KVM could not run the guest any further);
//! - 3: stopped by SIGTERM, SIGINT or SIGHUP;
//! - 124: `--timeout-s` ran out;
//! - 159 (128 + SIGSYS): a thread made a system call its seccomp filter forbids
//!   (`--seccomp trap`, the default: stderr names the call and the thread), or could
//!   not install its filter;
//! - with `--debug-exit` (test guests): the byte the guest wrote to port 0x501.
//!
//! However the VM ends, the vCPU and device threads are stopped first, the vsock
//! socket is removed, the drives' locks are released, taps the VM created are gone
//! and virtio-fs backends are hung up on; nothing is left behind but the serial log.
//! (A seccomp trap is the exception: the process ends at once, a vsock socket may
//! remain.)
//!
//! Every thread runs under a seccomp filter for its kind ([`cocoon_vmm::seccomp`]):
//! the vCPU and device threads install theirs as they start; the main thread, once
//! the VM runs, and the signal and metrics threads install the VMM filter.

mod cli_args;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cocoon_vmm::seccomp::{self, ThreadKind};
use cocoon_vmm::{
    BootSource, DriveSpec, NetSpec, SerialOutput, SharedFsSpec, Stopper, VmConfig, VmExit, Vmm,
    VsockSpec,
};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

const EXIT_BUILD: u8 = 1;
const EXIT_CRASH: u8 = 2;
const EXIT_SIGNAL: u8 = 3;
const EXIT_TIMEOUT: u8 = 124;

#[derive(Parser, Debug)]
#[command(name = "cocoon-vmm", about = "Cocoon's builtin KVM micro-VMM", version)]
struct Args {
    /// Uncompressed ELF vmlinux with a PVH entry note.
    #[arg(long)]
    kernel: PathBuf,
    /// initrd (initramfs), handed to the kernel as its PVH module.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line (virtio-mmio devices are appended).
    #[arg(long, default_value = "console=ttyS0 reboot=t panic=-1")]
    cmdline: String,
    #[arg(long, default_value_t = 128)]
    memory_mib: u32,
    #[arg(long, default_value_t = 1)]
    vcpus: u8,
    /// File for the serial console's output (standard output if unset).
    #[arg(long)]
    serial_log: Option<PathBuf>,
    /// Add a virtio-rng device.
    #[arg(long)]
    entropy: bool,
    /// Add a virtio-vsock device whose host side is this hybrid-vsock unix socket
    /// (`CONNECT <port>\n`); it must not exist, and is removed when the VM ends.
    #[arg(long, value_name = "PATH")]
    vsock_uds: Option<PathBuf>,
    /// The guest's vsock context id.
    #[arg(long, default_value_t = 3, requires = "vsock_uds")]
    guest_cid: u64,
    /// Add a virtio-blk device backed by this raw image (a file or block device),
    /// locked while the VM runs: `path=<file>[,read_only=on][,id=<serial>]`. The
    /// serial (at most 20 characters) defaults to one derived from the file.
    /// Repeatable; the guest sees the drives in this order.
    #[arg(long = "drive", value_name = "path=FILE[,read_only=on][,id=SERIAL]", value_parser = cli_args::parse_drive)]
    drives: Vec<DriveSpec>,
    /// Add a virtio-fs device (repeatable): `socket=<path>,tag=<tag>`. A vhost-user
    /// file system backend (virtiofsd) must be listening on the unix socket `socket`
    /// (or start listening within a few seconds); the guest mounts the file system
    /// with `mount -t virtiofs <tag> <dir>` (tag: 1 to 36 bytes). Guest memory is then
    /// a shared memfd the backend maps. The connection is closed when the VM ends.
    #[arg(long = "shared-fs", value_name = "socket=PATH,tag=TAG", value_parser = cli_args::parse_shared_fs)]
    shared_fs: Vec<SharedFsSpec>,
    /// Add a virtio-net device on a host tap interface (repeatable, one device each):
    /// `tap=<ifname>[,mac=<aa:bb:cc:dd:ee:ff>]`. An existing tap (a persistent one the
    /// runtime made) is used as is; otherwise it is created, and gone when the VM
    /// ends. Without `mac` the guest gets a locally administered address derived from
    /// the interface name. No offloads: the guest sends and receives whole frames.
    #[arg(long = "net", value_name = "tap=IFNAME[,mac=MAC]", value_parser = cli_args::parse_net)]
    nets: Vec<NetSpec>,
    /// Add the debug-exit port 0x501 (test guests): a write ends the VM with its byte
    /// as the exit status.
    #[arg(long)]
    debug_exit: bool,
    /// Stop the VM after this many seconds.
    #[arg(long)]
    timeout_s: Option<u64>,
    /// Write the VM's metrics (boot time, exits by reason, device counters) as JSON to
    /// this file, replaced atomically every `--metrics-interval-ms` and at the end.
    #[arg(long, value_name = "PATH")]
    metrics: Option<PathBuf>,
    #[arg(long, default_value_t = 1000, requires = "metrics")]
    metrics_interval_ms: u64,
    /// Seccomp filters: `trap` (a forbidden system call ends the VMM with status 159,
    /// naming the call and the thread on stderr), `log` (allowed, logged by the
    /// kernel: for finding what a filter lacks) or `off`.
    #[arg(long, value_name = "MODE", default_value_t = seccomp::Mode::Trap)]
    seccomp: seccomp::Mode,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_BUILD)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cocoon-vmm: {e:#}");
            ExitCode::from(EXIT_BUILD)
        }
    }
}

fn config(args: Args) -> VmConfig {
    VmConfig {
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        serial: args
            .serial_log
            .map_or(SerialOutput::Stdout, SerialOutput::File),
        debug_exit: args.debug_exit,
        entropy: args.entropy,
        vsock: args.vsock_uds.map(|uds_path| VsockSpec {
            guest_cid: args.guest_cid,
            uds_path,
        }),
        drives: args.drives,
        shared_fs: args.shared_fs,
        nets: args.nets,
        boot: BootSource::Kernel {
            path: args.kernel,
            cmdline: args.cmdline,
            initrd: args.initrd,
        },
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let timeout = args.timeout_s.map(Duration::from_secs);
    // Compiled before any thread exists; each thread installs its own filter.
    seccomp::prepare(args.seccomp).context("preparing the seccomp filters")?;
    // Blocked before any thread exists, so every thread inherits it and the signals
    // wait in the signalfd (even those that arrive while the VM is being built).
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC).context("signalfd")?;

    let metrics_path = args.metrics.clone();
    let interval = Duration::from_millis(args.metrics_interval_ms.max(10));
    let vmm = Vmm::start(config(args)).context("starting the VM")?;
    let reporter = metrics_path
        .clone()
        .map(|p| spawn_metrics_thread(vmm.metrics(), p, interval))
        .transpose()?;
    let signalled = Arc::new(AtomicI32::new(0));
    spawn_signal_thread(signal_fd, vmm.stopper(), signalled.clone())?;
    seccomp::apply(ThreadKind::Vmm);
    let exit = match timeout {
        Some(t) => vmm.wait_timeout(t),
        None => Some(vmm.wait()),
    };
    let stats = vmm.stats();
    let first_exit = vmm.time_to_first_exit();
    let source = vmm.metrics();
    let final_exit = vmm.stop();
    if let Some((stop, thread)) = reporter {
        drop(stop);
        let _ = thread.join();
    }
    if let Some(path) = &metrics_path {
        let end = serde_json::json!({ "exit": final_exit.to_string() });
        if let Err(e) = source.write(path, &[("end", end)]) {
            tracing::warn!(path = %path.display(), error = %e, "could not write the metrics");
        }
    }
    let signal = signalled.load(Ordering::SeqCst);
    tracing::info!(
        exit = %final_exit,
        signal,
        wall_ms = started.elapsed().as_millis() as u64,
        first_exit_us = first_exit.map(|d| d.as_micros() as u64),
        exits = stats.exits,
        pio = stats.pio,
        mmio = stats.mmio,
        "VM ended"
    );
    Ok(ExitCode::from(match exit {
        None => EXIT_TIMEOUT,
        Some(VmExit::DebugExit(code)) => code,
        Some(VmExit::Reset(_)) => 0,
        Some(VmExit::Stopped) if signal != 0 => EXIT_SIGNAL,
        Some(VmExit::Stopped) => 0,
        Some(VmExit::Crashed { .. }) => EXIT_CRASH,
    }))
}

/// Writes the metrics every `interval` until the returned sender is dropped (the
/// thread ends at once then; join it before the final write).
fn spawn_metrics_thread(
    source: cocoon_vmm::MetricsSource,
    path: PathBuf,
    interval: Duration,
) -> anyhow::Result<(mpsc::Sender<()>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            seccomp::apply(ThreadKind::Vmm);
            loop {
                if let Err(e) = source.write(&path, &[]) {
                    tracing::warn!(path = %path.display(), error = %e, "could not write the metrics");
                }
                if !matches!(
                    rx.recv_timeout(interval),
                    Err(mpsc::RecvTimeoutError::Timeout)
                ) {
                    break;
                }
            }
        })
        .context("starting the metrics thread")?;
    Ok((tx, handle))
}

/// Turns SIGTERM/SIGINT/SIGHUP into a VM stop; `signalled` records which one came.
fn spawn_signal_thread(
    fd: SignalFd,
    stopper: Stopper,
    signalled: Arc<AtomicI32>,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            seccomp::apply(ThreadKind::Vmm);
            if let Ok(Some(info)) = fd.read_signal() {
                let signo = info.ssi_signo as i32;
                tracing::info!(signal = signo, "stopping the VM");
                signalled.store(signo, Ordering::SeqCst);
                stopper.stop();
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
