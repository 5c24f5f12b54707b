//! cocoon-agent: PID 1 of the pod VM, or a host process for tests.

use clap::Parser;
use cocoon_agent::init::reaper::Reaper;
use cocoon_agent::listen::ListenAddr;
use cocoon_agent::pods::{Pods, PodsConfig};
use cocoon_agent::rpc::AgentState;
use cocoon_agent::{boot_clock, cgroups, helper, init, server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Parser)]
#[command(version, about = "Cocoon's guest agent")]
struct Args {
    /// Where to serve the agent API: vsock:<port> or unix:<path>.
    #[arg(long, default_value = "vsock:1024")]
    listen: ListenAddr,
    /// Where pods, containers and libcontainer's state live.
    #[arg(long, default_value = "/run/cocoon")]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    let started_ns = boot_clock::since_boot_ns();
    let guest = std::process::id() == 1;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(!guest)
        .with_writer(std::io::stderr)
        .init();

    // The re-executed helper: single-threaded, one libcontainer operation, then exit.
    if std::env::args().nth(1).as_deref() == Some(helper::HELPER_ARG) {
        return helper::main();
    }

    // As PID 1 the arguments are whatever the kernel command line left over: ignore them.
    let args = if guest {
        Args {
            listen: ListenAddr::Vsock {
                port: cocoon_proto::AGENT_VSOCK_PORT,
            },
            state_dir: PathBuf::from("/run/cocoon"),
        }
    } else {
        Args::parse()
    };
    let setup = if guest {
        init::setup_guest()
    } else {
        init::setup_host_process();
        init::SetupReport::default()
    };
    if let Err(e) = std::fs::create_dir_all(&args.state_dir) {
        tracing::error!(dir = %args.state_dir.display(), "create state dir: {e}");
        return ExitCode::FAILURE;
    }
    let state = Arc::new(AgentState {
        guest,
        started_ns,
        ready_ns: OnceLock::new(),
        setup,
        shutdown: Default::default(),
    });

    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let reaper = Reaper::new();
                reaper.start()?;
                let cfg = PodsConfig {
                    state_dir: args.state_dir.clone(),
                    cgroups: cgroups::detect_root().map(|root| cgroups::Cgroups { root }),
                    exe: PathBuf::from("/proc/self/exe"),
                };
                let pods = Arc::new(Pods::new(cfg, reaper));
                if !guest {
                    // SIGTERM ends a host-process agent as Shutdown does: containers
                    // first, so none outlives it.
                    let mut term =
                        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                    let shutdown = state.shutdown.clone();
                    tokio::spawn(async move {
                        if term.recv().await.is_some() {
                            shutdown.notify_one();
                        }
                    });
                }
                let served = server::serve(args.listen, state, pods.clone()).await;
                pods.destroy_all().await;
                served?;
                anyhow::Ok(())
            })
        });
    if let Err(e) = &result {
        tracing::error!("agent failed: {e:#}");
    }
    if guest {
        init::power::power_off();
    }
    if result.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
