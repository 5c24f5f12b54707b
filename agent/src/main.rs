//! cocoon-agent: PID 1 of the pod VM, or a host process for tests.

use clap::Parser;
use cocoon_agent::listen::ListenAddr;
use cocoon_agent::rpc::AgentState;
use cocoon_agent::{boot_clock, init, server};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

#[derive(Debug, Parser)]
#[command(version, about = "Cocoon's guest agent")]
struct Args {
    /// Where to serve the agent API: vsock:<port> or unix:<path>.
    #[arg(long, default_value = "vsock:1024")]
    listen: ListenAddr,
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

    // As PID 1 the arguments are whatever the kernel command line left over: ignore them.
    let listen = if guest {
        ListenAddr::Vsock {
            port: cocoon_proto::AGENT_VSOCK_PORT,
        }
    } else {
        Args::parse().listen
    };
    let setup = if guest {
        init::setup_guest()
    } else {
        init::SetupReport::default()
    };
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
                if guest {
                    init::reaper::spawn()?;
                }
                server::serve(listen, state).await?;
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
