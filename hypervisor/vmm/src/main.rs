//! `cocoon-vmm`: runs one VM in this process and exits when it ends.
//!
//! With `--kernel` the VM is built from the command line and starts at once; with
//! `--api-sock <path>` a control API serves on that socket (see `cocoon_vmm::api`),
//! and without `--kernel` the process waits for the API's `PUT /vm/config` and
//! `PUT /vm/start` (a VM that fails to start is reported to the API client, and the
//! process waits on). `PUT /vm/stop` ends the VM (status 0), or the process before a
//! VM ran (status 0).
//!
//! Exit status:
//! - 0: the guest ended the VM (reset, triple fault, power-off: a microVM exits
//!   instead of rebooting);
//! - 1: bad arguments, the API socket is served by a live process, or the command
//!   line's VM could not be built (the error is on stderr);
//! - 2: a vCPU crashed (KVM could not run the guest any further);
//! - 3: stopped by SIGTERM, SIGINT or SIGHUP;
//! - 124: `--timeout-s` ran out (counted from the VM's start);
//! - 159 (128 + SIGSYS): a thread made a system call its seccomp filter forbids
//!   (`--seccomp trap`, the default: stderr names the call and the thread), or could
//!   not install its filter;
//! - with `--debug-exit` (test guests): the byte the guest wrote to port 0x501.
//!
//! However the VM ends, the vCPU and device threads are stopped first, the vsock and
//! API sockets are removed, the drives' locks are released, taps the VM created are
//! gone and virtio-fs backends are hung up on; nothing is left behind but the serial
//! log (and the metrics file). (A seccomp trap is the exception: the process ends at
//! once, a vsock socket may remain.)
//!
//! Every thread runs under a seccomp filter for its kind ([`cocoon_vmm::seccomp`]):
//! the main thread installs the build filter before it starts any thread (every
//! other thread inherits it), the vCPU and device threads add theirs as they start,
//! the API thread the API filter; the main thread, once the VM runs, and the signal
//! and metrics threads add the VMM filter.

mod cli_args;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cocoon_vmm::api::{error_chain, ApiServer, ApiSocket, OwnerRequest, VmSlot};
use cocoon_vmm::seccomp::{self, ThreadKind};
use cocoon_vmm::{
    BootSource, DriveSpec, NetSpec, SerialOutput, SharedFsSpec, VmConfig, VmExit, Vmm, VsockSpec,
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
    /// Uncompressed ELF vmlinux with a PVH entry note: the VM starts at once. Without
    /// it, `--api-sock` is needed and the VM comes from `PUT /vm/config` and
    /// `PUT /vm/start`.
    #[arg(long, required_unless_present = "api_sock")]
    kernel: Option<PathBuf>,
    /// Serve the control API (HTTP/1.1, JSON) on this unix socket: configure, start,
    /// pause, resume, stop, state, devices, metrics. Refused if a live server listens
    /// there; removed when the process exits.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// initrd (initramfs), handed to the kernel as its PVH module.
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// Kernel command line (virtio-mmio devices are appended).
    #[arg(
        long,
        default_value = "console=ttyS0 reboot=t panic=-1",
        requires = "kernel"
    )]
    cmdline: String,
    #[arg(long, default_value_t = 128, requires = "kernel")]
    memory_mib: u32,
    #[arg(long, default_value_t = 1, requires = "kernel")]
    vcpus: u8,
    /// File for the serial console's output (standard output if unset).
    #[arg(long, requires = "kernel")]
    serial_log: Option<PathBuf>,
    /// Add a virtio-rng device.
    #[arg(long, requires = "kernel")]
    entropy: bool,
    /// Add a virtio-vsock device whose host side is this hybrid-vsock unix socket
    /// (`CONNECT <port>\n`); it must not exist, and is removed when the VM ends.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    vsock_uds: Option<PathBuf>,
    /// The guest's vsock context id.
    #[arg(long, default_value_t = 3, requires = "vsock_uds")]
    guest_cid: u64,
    /// Add a virtio-blk device backed by this raw image (a file or block device),
    /// locked while the VM runs: `path=<file>[,read_only=on][,id=<serial>]`. The
    /// serial (at most 20 characters) defaults to one derived from the file.
    /// Repeatable; the guest sees the drives in this order.
    #[arg(long = "drive", value_name = "path=FILE[,read_only=on][,id=SERIAL]", value_parser = cli_args::parse_drive, requires = "kernel")]
    drives: Vec<DriveSpec>,
    /// Add a virtio-fs device (repeatable): `socket=<path>,tag=<tag>`. A vhost-user
    /// file system backend (virtiofsd) must be listening on the unix socket `socket`
    /// (or start listening within a few seconds); the guest mounts the file system
    /// with `mount -t virtiofs <tag> <dir>` (tag: 1 to 36 bytes). Guest memory is then
    /// a shared memfd the backend maps. The connection is closed when the VM ends.
    #[arg(long = "shared-fs", value_name = "socket=PATH,tag=TAG", value_parser = cli_args::parse_shared_fs, requires = "kernel")]
    shared_fs: Vec<SharedFsSpec>,
    /// Add a virtio-net device on a host tap interface (repeatable, one device each):
    /// `tap=<ifname>[,mac=<aa:bb:cc:dd:ee:ff>]`. An existing tap (a persistent one the
    /// runtime made) is used as is; otherwise it is created, and gone when the VM
    /// ends. Without `mac` the guest gets a locally administered address derived from
    /// the interface name. No offloads: the guest sends and receives whole frames.
    #[arg(long = "net", value_name = "tap=IFNAME[,mac=MAC]", value_parser = cli_args::parse_net, requires = "kernel")]
    nets: Vec<NetSpec>,
    /// Add the debug-exit port 0x501 (test guests): a write ends the VM with its byte
    /// as the exit status.
    #[arg(long, requires = "kernel")]
    debug_exit: bool,
    /// Stop the VM this many seconds after it started.
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

/// The VM the command line describes (with `--kernel`).
fn config(args: &Args) -> Option<VmConfig> {
    let kernel = args.kernel.clone()?;
    Some(VmConfig {
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        serial: args
            .serial_log
            .clone()
            .map_or(SerialOutput::Stdout, SerialOutput::File),
        debug_exit: args.debug_exit,
        entropy: args.entropy,
        vsock: args.vsock_uds.clone().map(|uds_path| VsockSpec {
            guest_cid: args.guest_cid,
            uds_path,
        }),
        drives: args.drives.clone(),
        nets: args.nets.clone(),
        shared_fs: args.shared_fs.clone(),
        boot: BootSource::Kernel {
            path: kernel,
            cmdline: args.cmdline.clone(),
            initrd: args.initrd.clone(),
        },
    })
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
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
    // From here on this thread builds: its filter holds what building needs and what
    // every thread it starts does (they inherit it and stack their own on it).
    seccomp::apply(ThreadKind::Build);

    // The API socket first, while this is the only thread: a live server on the path
    // ends this process before anything else happens.
    let api_socket = args
        .api_sock
        .as_deref()
        .map(ApiSocket::bind)
        .transpose()
        .context("the API socket")?;
    let slot = Arc::new(VmSlot::new());
    let signalled = Arc::new(AtomicI32::new(0));
    spawn_signal_thread(signal_fd, slot.clone(), signalled.clone())?;
    let api = api_socket
        .map(|socket| ApiServer::spawn(socket, slot.clone()))
        .transpose()
        .context("starting the API thread")?;
    let code = run_vm(&args, &slot, &signalled);
    // Removes the API socket: after the VM, so a client sees the end through it.
    if let Some(api) = api {
        api.stop();
    }
    code
}

/// Builds the VM (the command line's, or the API's once it asks), runs it to its end
/// and tears it down.
fn run_vm(args: &Args, slot: &VmSlot, signalled: &AtomicI32) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let vmm = match config(args) {
        Some(config) => {
            slot.begin_start(config.clone());
            slot.finish_start(Vmm::start(config))
                .context("starting the VM")?
        }
        None => loop {
            match slot.next_request() {
                OwnerRequest::Start(config) => {
                    let started = Vmm::start(*config);
                    // Logged before the API answers, so a client that reads the log
                    // when it gets the error finds the reason there.
                    if let Err(e) = &started {
                        tracing::warn!(error = %error_chain(e), "the VM did not start");
                    }
                    if let Ok(vmm) = slot.finish_start(started) {
                        break vmm;
                    }
                }
                OwnerRequest::Stop => {
                    tracing::info!("stopped before a VM was started");
                    let signal = signalled.load(Ordering::SeqCst);
                    return Ok(ExitCode::from(if signal != 0 { EXIT_SIGNAL } else { 0 }));
                }
            }
        },
    };
    let timeout = args.timeout_s.map(Duration::from_secs);
    let metrics_path = args.metrics.clone();
    let interval = Duration::from_millis(args.metrics_interval_ms.max(10));
    let reporter = metrics_path
        .clone()
        .map(|p| spawn_metrics_thread(vmm.metrics(), p, interval))
        .transpose()?;
    // The VM runs: from here this thread only waits, stops it and writes the metrics.
    seccomp::apply(ThreadKind::Vmm);
    let exit = match timeout {
        Some(t) => vmm.wait_timeout(t),
        None => Some(vmm.wait()),
    };
    let stats = vmm.stats();
    let first_exit = vmm.time_to_first_exit();
    let source = vmm.metrics();
    let final_exit = vmm.shutdown();
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
    slot: Arc<VmSlot>,
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
                slot.stop();
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}
