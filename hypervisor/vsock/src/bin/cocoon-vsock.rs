//! `cocoon-vsock`: a vhost-user-vsock backend whose host side is a hybrid-vsock unix socket.
//!
//! ```text
//! cocoon-vsock --socket <vhost-user socket> --uds <hybrid uds> --guest-cid <N>
//! ```
//!
//! Creates `<uds>` first, then the vhost-user socket (so once the latter exists, both do),
//! serves exactly one frontend, and exits 0 when it disconnects or on SIGTERM/SIGINT/SIGHUP,
//! removing both sockets. Fails (exit 1) if either path exists or does not fit a unix
//! socket address. Logs to stderr (`RUST_LOG`, default `info`); prints nothing on stdout.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use cocoon_vsock::vhost_user::{bind_listener, serve_one};
use cocoon_vsock::{check_socket_path, VsockConfig, VsockDevice};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// vhost-user-vsock backend with a hybrid-vsock (Firecracker protocol) host socket.
#[derive(Parser, Debug)]
#[command(name = "cocoon-vsock", version)]
struct Args {
    /// vhost-user socket to create; exactly one frontend (QEMU) is served on it.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// Hybrid vsock socket to create: host clients send `CONNECT <port>\n` here; guest
    /// connections to host port P go to `<uds>_<P>`.
    #[arg(long, value_name = "PATH")]
    uds: PathBuf,
    /// The guest's context id (3..=4294967294).
    #[arg(long, value_name = "N")]
    guest_cid: u64,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cocoon-vsock: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    // Check both paths before creating either.
    check_socket_path("--socket", &args.socket)?;
    if std::fs::symlink_metadata(&args.socket).is_ok() {
        bail!("--socket {} already exists", args.socket.display());
    }
    let config = VsockConfig::new(args.guest_cid, &args.uds);
    config.validate().context("bad --uds or --guest-cid")?;

    // Signals go to a thread of their own: block them before any thread is spawned.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().context("blocking signals")?;
    let signal_fd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC).context("signalfd")?;

    let device = VsockDevice::new(config).context("creating the vsock device")?;
    let metrics = device.metrics_handle();
    let mut listener = match bind_listener(&args.socket) {
        Ok(l) => l,
        Err(e) => {
            remove(&args.uds);
            return Err(e).context("creating the vhost-user socket");
        }
    };
    spawn_signal_thread(signal_fd, [args.socket.clone(), args.uds.clone()]);
    info!(
        socket = %args.socket.display(),
        uds = %args.uds.display(),
        guest_cid = args.guest_cid,
        "waiting for the vhost-user frontend"
    );
    let res = serve_one(device, &mut listener);
    drop(listener);
    // The vring worker may still hold the device; remove its socket ourselves.
    remove(&args.socket);
    remove(&args.uds);
    info!(metrics = ?metrics.snapshot(), "vsock counters");
    res.context("serving the vhost-user frontend")?;
    info!("frontend disconnected; exiting");
    Ok(())
}

fn spawn_signal_thread(fd: SignalFd, paths: [PathBuf; 2]) {
    let spawned = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Ok(Some(sig)) = fd.read_signal() {
                info!(signal = sig.ssi_signo, "terminating");
            }
            for p in &paths {
                remove(p);
            }
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        warn!("no signal thread, sockets stay behind on SIGTERM: {e}");
    }
}

fn remove(path: &Path) {
    let _ = std::fs::remove_file(path);
}
