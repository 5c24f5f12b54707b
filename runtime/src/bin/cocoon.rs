//! `cocoon`: Cocoon's command line for people.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cocoon_hypervisor::config::ValidVmConfig;
use cocoon_hypervisor::{AccelChoice, ExitReason, Vm, VmConfig};
use cocoon_proto::agent::v1::ExitReason as ProcessExitReason;
use cocoon_runtime::agent_client::transfer;
use cocoon_runtime::cli::{self, CriCommand};
use cocoon_runtime::guest_image::{self, GuestImage};
use cocoon_runtime::pod_vm::PodVm;
use cocoon_runtime::run_container::run_test_image;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(version, about = "Cocoon: VM-isolated pod sandboxes")]
struct Cli {
    /// cocoond's CRI socket [env: COCOON_SOCKET] [default: /run/cocoon/cocoon.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Cri(CriCommand),
    /// Pod VMs without Kubernetes or cocoond.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
}

#[derive(Debug, Subcommand)]
enum VmCommand {
    /// Boot a pod VM, print the guest's details and boot timings, shut it down.
    Boot(BootArgs),
    /// Boot a pod VM, run a container of the built-in busybox test image in it, print
    /// its output, shut the VM down. Exits with the container's exit code.
    Run(RunArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

/// What VM to boot, shared by every `vm` command.
#[derive(Debug, clap::Args)]
struct VmArgs {
    /// Directory with vmlinux + initramfs.img (default: found beside this binary).
    #[arg(long)]
    image_dir: Option<PathBuf>,
    /// Kernel to boot instead of the image's.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initramfs to boot instead of the image's.
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    vcpus: u32,
    #[arg(long, default_value_t = 256)]
    memory_mib: u32,
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Where the VM's sockets and logs live while it runs (must not exist).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 60)]
    ready_timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
struct BootArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// Do not wait for an agent: wait until the guest ends by itself and report launch →
    /// exit (the boot benchmark's trivial-init baseline uses this).
    #[arg(long)]
    no_agent: bool,
    /// Also move this many MiB each way through the agent channel and report MB/s.
    #[arg(long, default_value_t = 0)]
    transfer_mib: u64,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    vm: VmArgs,
    /// The container's command (after `--`); default: a greeting from inside.
    #[arg(last = true)]
    command: Vec<String>,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cocoon: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match cli.command {
        Command::Cri(command) => {
            let socket = cli::socket_path(cli.socket, std::env::var_os(cli::SOCKET_ENV));
            let result = rt.block_on(cli::execute(
                &socket,
                &command,
                &mut std::io::stdout(),
                &mut std::io::stderr(),
                interrupted(),
            ));
            match result {
                Ok(code) => code,
                // The reader went away (`cocoon logs | head`): as if killed by SIGPIPE.
                Err(e) if e.is_broken_pipe() => 128 + 13,
                Err(e) => {
                    eprintln!("cocoon: {}", cli::describe(&e));
                    1
                }
            }
        }
        Command::Vm {
            command: VmCommand::Boot(args),
        } => vm_outcome(rt.block_on(boot(args)).map(|()| 0)),
        Command::Vm {
            command: VmCommand::Run(args),
        } => vm_outcome(rt.block_on(run(args))),
    };
    std::process::exit(code);
}

fn vm_outcome(result: anyhow::Result<i32>) -> i32 {
    result.unwrap_or_else(|e| {
        eprintln!("cocoon: {e:#}");
        1
    })
}

/// Completes on ^C; never when the signal cannot be watched.
async fn interrupted() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The validated VM config of `args`.
fn vm_config(args: &VmArgs) -> anyhow::Result<ValidVmConfig> {
    let image = match &args.image_dir {
        Some(dir) => GuestImage::in_dir(dir)
            .with_context(|| format!("no vmlinux + initramfs.img in {}", dir.display()))?,
        None => GuestImage::locate().map_err(anyhow::Error::msg)?,
    };
    let run_dir = args.run_dir.clone().unwrap_or_else(default_run_dir);
    let kernel = args.kernel.clone().unwrap_or(image.kernel);
    let initrd = args.initrd.clone().unwrap_or(image.initrd);
    let mut config = VmConfig::new(kernel, initrd, run_dir);
    config.vcpus = args.vcpus;
    config.memory_mib = args.memory_mib;
    config.accel = match args.accel {
        AccelArg::Auto => AccelChoice::Auto,
        AccelArg::Kvm => AccelChoice::Kvm,
        AccelArg::Tcg => AccelChoice::Tcg,
    };
    config.vsock_backend = guest_image::vsock_backend();
    Ok(config.validate()?)
}

/// Boots a pod VM, runs one container of the built-in test image, shuts the VM down;
/// returns the container's exit code.
async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let valid = vm_config(&args.vm)?;
    let command = if args.command.is_empty() {
        vec![
            "sh".to_string(),
            "-c".into(),
            "echo \"hello from container $(hostname) in a Cocoon pod VM\"; uname -sr; id".into(),
        ]
    } else {
        args.command.clone()
    };
    let timeout = Duration::from_secs(args.vm.ready_timeout_secs);
    let (mut pod, _, t) = PodVm::boot(&valid, timeout).await?;
    eprintln!(
        "pod VM ready in {:.3} s (accel {})",
        t.total.as_secs_f64(),
        pod.vm.accel().accel
    );
    let (mut out, mut err) = (tokio::io::stdout(), tokio::io::stderr());
    let result = run_test_image(&mut pod.agent, "cocoon-demo", &command, &mut out, &mut err).await;
    let exit = pod.shutdown(Duration::from_secs(10)).await;
    let status = result?;
    let reason =
        ProcessExitReason::try_from(status.reason).unwrap_or(ProcessExitReason::Unspecified);
    let reason = reason
        .as_str_name()
        .trim_start_matches("EXIT_REASON_")
        .to_lowercase();
    eprintln!(
        "container exited: {reason} (code {}); {exit}",
        status.exit_code
    );
    Ok(status.exit_code)
}

async fn boot(args: BootArgs) -> anyhow::Result<()> {
    let valid = vm_config(&args.vm)?;
    if args.no_agent {
        return boot_until_exit(&valid, &args).await;
    }

    let (mut pod, details, t) =
        PodVm::boot(&valid, Duration::from_secs(args.vm.ready_timeout_secs)).await?;
    let mut transfer_rates = None;
    if args.transfer_mib > 0 {
        let bytes = args.transfer_mib * 1024 * 1024;
        let up = transfer::host_to_guest(&mut pod.agent, bytes, 1).await;
        let down = transfer::guest_to_host(&mut pod.agent, bytes, 2).await;
        match (up, down) {
            (Ok(up), Ok(down)) => {
                transfer_rates = Some((
                    transfer::mb_per_s(bytes, up),
                    transfer::mb_per_s(bytes, down),
                ))
            }
            (up, down) => {
                let exit = pod.shutdown(Duration::from_secs(5)).await;
                anyhow::bail!(
                    "transfer failed: host→guest {up:?}, guest→host {down:?}; VM: {exit}"
                );
            }
        }
    }
    let accel = pod.vm.accel().clone();
    let exit = pod.shutdown(Duration::from_secs(10)).await;

    let s = |d: Duration| d.as_secs_f64();
    if args.json {
        let mut v = serde_json::json!({
            "accel": accel.accel.to_string(),
            "total_s": s(t.total),
            "vmm_start_s": s(t.vmm_start),
            "kernel_boot_s": s(t.kernel_boot),
            "agent_init_s": s(t.agent_init),
            "handshake_s": s(t.handshake),
            "attempts": t.attempts,
            "kernel_release": details.kernel_release,
            "vcpus": details.vcpus,
            "memory_total_bytes": details.memory_total_bytes,
            "agent_version": details.agent_version,
            "exit": exit.to_string(),
        });
        if let Some((up, down)) = transfer_rates {
            v["host_to_guest_mb_s"] = up.into();
            v["guest_to_host_mb_s"] = down.into();
        }
        println!("{v}");
    } else {
        println!(
            "pod VM ready in {:.3} s (accel {}: {})",
            s(t.total),
            accel.accel,
            accel.reason
        );
        println!("  vmm start    {:.3} s", s(t.vmm_start));
        println!("  kernel boot  {:.3} s", s(t.kernel_boot));
        println!("  agent init   {:.3} s", s(t.agent_init));
        println!(
            "  handshake    {:.3} s ({} attempts)",
            s(t.handshake),
            t.attempts
        );
        println!(
            "guest: Linux {} ({}), {} vCPUs, {} MiB, agent {}",
            details.kernel_release,
            details.kernel_version,
            details.vcpus,
            details.memory_total_bytes / (1024 * 1024),
            details.agent_version
        );
        if let Some((up, down)) = transfer_rates {
            println!("vsock: host→guest {up:.1} MB/s, guest→host {down:.1} MB/s ({} MiB each way, SHA-256 verified)", args.transfer_mib);
        }
        println!("{exit}");
    }
    if !matches!(exit.reason, ExitReason::Shutdown) {
        anyhow::bail!("VM did not shut down cleanly: {exit}");
    }
    Ok(())
}

/// Boots and waits for the guest to end by itself; reports launch → exit.
async fn boot_until_exit(valid: &ValidVmConfig, args: &BootArgs) -> anyhow::Result<()> {
    let launched = Instant::now();
    let vm = Vm::start(valid).await?;
    let exit = match tokio::time::timeout(
        Duration::from_secs(args.vm.ready_timeout_secs),
        vm.wait(),
    )
    .await
    {
        Ok(exit) => exit,
        Err(_) => vm.kill().await,
    };
    let took = launched.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "accel": vm.accel().accel.to_string(),
                "launch_to_exit_s": took,
                "exit": exit.to_string(),
            })
        );
    } else {
        println!("guest ended {took:.3} s after launch: {exit}");
    }
    if !matches!(exit.reason, ExitReason::Shutdown) {
        anyhow::bail!(
            "guest did not end cleanly: {exit}\n--- console ---\n{}",
            exit.console_tail
        );
    }
    Ok(())
}

fn default_run_dir() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/run".into());
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0)
    );
    base.join("cocoon/vms").join(unique)
}
