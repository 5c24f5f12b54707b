//! cocoond: Cocoon's CRI v1 runtime daemon. kubelet (or `cocoon`, or crictl) talks to it
//! on a unix socket; every pod it runs is a VM.
//!
//! On SIGTERM or SIGINT it stops serving and exits *without* stopping pods: their VMs
//! keep running and the next cocoond re-attaches to them, as containerd does with its
//! shims.

use clap::Parser;
use cocoon_runtime::config::{DaemonConfig, DEFAULT_CONFIG_PATH};
use cocoon_runtime::cri::server;
use cocoon_runtime::daemon::Daemon;
use std::path::PathBuf;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Parser)]
#[command(
    name = "cocoond",
    version,
    about = "Cocoon's CRI runtime: every pod a micro-VM"
)]
struct Args {
    /// The TOML configuration file (a missing default file means all defaults).
    #[arg(long, short, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Overrides `socket` of the configuration.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Overrides `state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Overrides `root_dir`.
    #[arg(long)]
    root_dir: Option<PathBuf>,
    /// Checks the configuration and exits.
    #[arg(long)]
    check_config: bool,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("cocoond: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let explicit = args.config.as_os_str() != DEFAULT_CONFIG_PATH;
    let mut config = DaemonConfig::load(&args.config, explicit)?;
    if let Some(s) = args.socket {
        config.socket = s;
    }
    if let Some(s) = args.state_dir {
        config.state_dir = s;
    }
    if let Some(s) = args.root_dir {
        config.root_dir = s;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_level.clone());
    let config = config.validate()?;
    if args.check_config {
        println!("cocoond: configuration is valid");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(filter)?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async move {
        let socket = config.raw.socket.clone();
        let group = config.raw.socket_group.clone();
        let daemon = Daemon::start(config).await?;
        let listener = server::bind(&socket, group.as_deref())?;
        tracing::info!(socket = %socket.display(), "cocoond serving CRI v1");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        server::serve(daemon, listener, shutdown).await?;
        let _ = std::fs::remove_file(&socket);
        tracing::info!("cocoond stopping; pod VMs keep running");
        // Exit without dropping the daemon: dropping a VM handle kills the VM.
        std::process::exit(0)
    })
}
