//! `cocoon-vmm`: boots one VM and exits with the guest's exit.
//!
//! Exit status: the code a test guest wrote to the debug-exit port; 0 when the guest
//! reset or powered off (a microVM ends instead of rebooting); 124 when `--timeout-s`
//! ran out; 2 when a vCPU crashed; 1 when the VM could not be built.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use cocoon_vmm::{BootSource, SerialOutput, VmConfig, VmExit, Vmm};

#[derive(Parser, Debug)]
#[command(name = "cocoon-vmm", about = "Cocoon's builtin KVM micro-VMM")]
struct Args {
    /// Uncompressed ELF vmlinux with a PVH entry note.
    #[arg(long)]
    kernel: PathBuf,
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
    /// Stop the VM after this many seconds.
    #[arg(long)]
    timeout_s: Option<u64>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("cocoon-vmm: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = VmConfig {
        vcpus: args.vcpus,
        memory_mib: args.memory_mib,
        serial: args
            .serial_log
            .map_or(SerialOutput::Stdout, SerialOutput::File),
        debug_exit: false,
        entropy: args.entropy,
        boot: BootSource::Kernel {
            path: args.kernel,
            cmdline: args.cmdline,
        },
    };
    let vmm = Vmm::start(config).context("starting the VM")?;
    let exit = match args.timeout_s {
        Some(s) => vmm.wait_timeout(Duration::from_secs(s)),
        None => Some(vmm.wait()),
    };
    let stats = vmm.stats();
    let first_exit = vmm.time_to_first_exit();
    let final_exit = vmm.stop();
    tracing::info!(
        exit = %final_exit,
        wall_ms = started.elapsed().as_millis() as u64,
        first_exit_us = first_exit.map(|d| d.as_micros() as u64),
        exits = stats.exits,
        pio = stats.pio,
        mmio = stats.mmio,
        "VM ended"
    );
    Ok(match exit {
        None => ExitCode::from(124),
        Some(VmExit::DebugExit(code)) => ExitCode::from(code),
        Some(VmExit::Reset(_) | VmExit::Stopped) => ExitCode::SUCCESS,
        Some(VmExit::Crashed { .. }) => ExitCode::from(2),
    })
}
