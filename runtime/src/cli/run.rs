//! `cocoon run`: a pod VM with one container, its output followed like `docker run`.

use super::error::{describe, Error, RpcResult};
use super::logs::{container_status, follow, log_path, Printer};
use super::parse::{self, Cpus, EnvVar, Volume};
use super::pull::{image_status, pull_image};
use super::rm::remove_pod_sandbox;
use super::run_spec::{default_name, random_uid, RunSpec};
use super::stop::stop_pod;
use crate::cri_client::CriClient;
use crate::cri_log::reader::LogFile;
use k8s_cri::v1::{CreateContainerRequest, RunPodSandboxRequest, StartContainerRequest};
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// When to pull the image before running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    Always,
    Missing,
    Never,
}

/// Run a container in a new pod VM.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The pod's and the container's name (default: the image's name and a random suffix).
    #[arg(long, value_parser = parse::name)]
    pub name: Option<String>,
    /// Remove the container and its pod once it exits (or on ^C).
    #[arg(long, conflicts_with = "detach")]
    pub rm: bool,
    /// Start the container, print its id and return.
    #[arg(short, long)]
    pub detach: bool,
    /// A variable: KEY=VALUE, or KEY to pass this shell's value on.
    #[arg(short, long = "env", value_name = "KEY=VALUE", value_parser = parse::env)]
    pub env: Vec<EnvVar>,
    /// Memory limit: 256Mi, 1.5Gi, 500M, or bytes.
    #[arg(long, value_parser = parse::memory)]
    pub memory: Option<i64>,
    /// CPU limit: 1.5, 2, or 500m.
    #[arg(long, value_parser = parse::cpus)]
    pub cpus: Option<Cpus>,
    /// Mount a host directory or file: HOST:CONTAINER, read-only with :ro.
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]", value_parser = parse::volume)]
    pub volumes: Vec<Volume>,
    /// cocoond's runtime handler for the pod (default: its default).
    #[arg(long, value_name = "HANDLER")]
    pub runtime: Option<String>,
    /// When to pull the image.
    #[arg(long, value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,
    /// How long starting the pod and its container may take (not counting the pull).
    #[arg(long, default_value = "30s", value_parser = parse::duration)]
    pub timeout: Duration,
    /// The image to run.
    pub image: String,
    /// The command, replacing the image's entrypoint and command (after `--` when it
    /// starts with `-`).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The configs to send; variables given without a value come from `lookup`.
    pub fn spec(&self, uid: String, lookup: impl Fn(&str) -> Option<String>) -> RunSpec {
        RunSpec {
            name: self
                .name
                .clone()
                .unwrap_or_else(|| default_name(&self.image, &uid)),
            uid,
            image: self.image.clone(),
            command: self.command.clone(),
            envs: self.env.iter().filter_map(|e| e.resolve(&lookup)).collect(),
            volumes: self.volumes.clone(),
            memory_bytes: self.memory,
            cpus: self.cpus,
        }
    }
}

/// What this run has made so far, for cleaning up.
#[derive(Debug, Default)]
struct Made {
    /// RunPodSandbox was sent (the pod may exist without our knowing its id).
    pod_requested: bool,
    pod_id: Option<String>,
    started: bool,
}

/// The exit code of a run cut short by ^C.
pub const INTERRUPTED: i32 = 130;

/// How long removing a pod may take.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the container; unless detached, prints its output as it comes and returns its exit
/// code. `interrupt` completing (^C) stops following: the pod is removed with `--rm`, and
/// the run returns [`INTERRUPTED`].
pub async fn run(
    client: &mut CriClient,
    args: &RunArgs,
    out: &mut impl Write,
    err: &mut impl Write,
    interrupt: impl Future<Output = ()>,
) -> Result<i32, Error> {
    let spec = args.spec(random_uid(), |key| std::env::var(key).ok());
    let mut made = Made::default();
    let outcome = {
        let main = run_until_exit(client, args, &spec, &mut made, out, err);
        tokio::select! {
            result = main => Some(result),
            () = interrupt => None,
        }
    };
    // What a person has no id of, or asked to be removed, goes.
    let clean_up = args.rm || !made.started;
    if clean_up && made.pod_requested {
        let cleaned = tokio::time::timeout(CLEANUP_TIMEOUT, remove_pod(client, &spec, &made))
            .await
            .unwrap_or(Err(Error::Timeout {
                what: "removing the pod",
                after: CLEANUP_TIMEOUT,
            }));
        if let Err(e) = cleaned {
            // The run's own outcome matters more; this is said, not returned.
            writeln!(err, "cocoon: {}", describe(&e))?;
        }
    }
    match outcome {
        None => Ok(INTERRUPTED),
        Some(result) => result,
    }
}

async fn run_until_exit(
    client: &mut CriClient,
    args: &RunArgs,
    spec: &RunSpec,
    made: &mut Made,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, Error> {
    ensure_image(client, &spec.image, args.pull).await?;
    let runtime = args.runtime.clone().unwrap_or_default();
    let container_id = tokio::time::timeout(args.timeout, start(client, spec, runtime, made))
        .await
        .map_err(|_| Error::Timeout {
            what: "starting the pod and its container",
            after: args.timeout,
        })??;
    if args.detach {
        writeln!(out, "{container_id}")?;
        return Ok(0);
    }
    let status = container_status(client, &container_id).await?;
    let mut path = log_path(&status)?;
    if path.is_relative() {
        path = Path::new(&spec.log_directory()).join(path);
    }
    let mut printer = Printer {
        out,
        err,
        timestamps: false,
    };
    let exited = follow(
        client,
        &container_id,
        &mut LogFile::watch(path),
        &mut printer,
    )
    .await?;
    tracing::debug!(
        container_id,
        exit_code = exited.exit_code,
        reason = exited.reason,
        "container exited"
    );
    Ok(exited.exit_code)
}

/// Makes the pod and its container and starts it; returns the container's id.
async fn start(
    client: &mut CriClient,
    spec: &RunSpec,
    runtime_handler: String,
    made: &mut Made,
) -> Result<String, Error> {
    let pod_config = spec.pod_config();
    made.pod_requested = true;
    let pod_id = client
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler,
        })
        .await
        .rpc("run pod")?
        .pod_sandbox_id;
    made.pod_id = Some(pod_id.clone());
    let container_id = client
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod_id,
            config: Some(spec.container_config()),
            sandbox_config: Some(pod_config),
        })
        .await
        .rpc("create container")?
        .container_id;
    client
        .runtime
        .start_container(StartContainerRequest {
            container_id: container_id.clone(),
        })
        .await
        .rpc("start container")?;
    made.started = true;
    Ok(container_id)
}

/// Pulls the image when `policy` says so.
pub async fn ensure_image(
    client: &mut CriClient,
    image: &str,
    policy: PullPolicy,
) -> Result<(), Error> {
    let present = match policy {
        PullPolicy::Always => false,
        PullPolicy::Missing | PullPolicy::Never => image_status(client, image).await?.is_some(),
    };
    if present {
        return Ok(());
    }
    if policy == PullPolicy::Never {
        return Err(Error::Refused(format!(
            "image {image} is not present and --pull is never"
        )));
    }
    pull_image(client, image, None).await?;
    Ok(())
}

/// Stops and removes the run's pod, found by its uid when its id never came back.
async fn remove_pod(client: &mut CriClient, spec: &RunSpec, made: &Made) -> Result<(), Error> {
    let pod_id = match &made.pod_id {
        Some(id) => id.clone(),
        None => {
            let pods = super::resolve::list_pods(client).await?;
            let mine = pods
                .into_iter()
                .find(|p| p.metadata.as_ref().is_some_and(|m| m.uid == spec.uid));
            match mine {
                Some(pod) => pod.id,
                None => return Ok(()),
            }
        }
    };
    tracing::debug!(pod_id, "removing the pod");
    stop_pod(client, &pod_id).await?;
    remove_pod_sandbox(client, &pod_id).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied())).map(|c| c.run)
    }

    #[test]
    fn options_come_before_the_image_and_the_command_after() {
        let args = parse(&[
            "--name",
            "web",
            "--rm",
            "-e",
            "A=1",
            "--env",
            "HOME",
            "--memory",
            "256Mi",
            "--cpus",
            "1.5",
            "-v",
            "/data:/mnt:ro",
            "--runtime",
            "fast",
            "--pull",
            "always",
            "--timeout",
            "1m",
            "busybox",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        assert_eq!(args.name.as_deref(), Some("web"));
        assert!(args.rm && !args.detach);
        assert_eq!(args.memory, Some(256 << 20));
        assert_eq!(args.cpus.unwrap().quota_us(), 150_000);
        assert!(args.volumes[0].readonly);
        assert_eq!(args.runtime.as_deref(), Some("fast"));
        assert_eq!(args.pull, PullPolicy::Always);
        assert_eq!(args.timeout, Duration::from_secs(60));
        assert_eq!(args.image, "busybox");
        assert_eq!(args.command, ["sh", "-c", "exit 3"]);

        let spec = args.spec("abcdef0123".into(), |k| {
            (k == "HOME").then(|| "/root".into())
        });
        assert_eq!(
            spec.envs,
            [("A".into(), "1".into()), ("HOME".into(), "/root".into())]
        );
        assert_eq!(spec.name, "web");
    }

    #[test]
    fn the_command_may_come_without_dashes() {
        let args = parse(&["busybox", "ls", "-l"]).unwrap();
        assert_eq!(args.command, ["ls", "-l"]);
        assert_eq!(args.pull, PullPolicy::Missing);
        assert_eq!(args.timeout, Duration::from_secs(30));
        let spec = args.spec("abcdef0123".into(), |_| None);
        assert_eq!(spec.name, "busybox-abcdef");
        assert!(parse(&["busybox"]).unwrap().command.is_empty());
    }

    #[test]
    fn bad_values_are_named() {
        let message = |args: &[&str]| parse(args).unwrap_err().to_string();
        assert!(message(&["--memory", "12q", "x"]).contains("unknown unit"));
        assert!(message(&["--cpus", "0", "x"]).contains("at least 0.01"));
        assert!(message(&["-v", "rel:/x", "x"]).contains("must be absolute"));
        assert!(message(&["--name", "No", "x"]).contains("lowercase"));
        assert!(message(&["--pull", "sometimes", "x"]).contains("sometimes"));
        assert!(message(&["--rm", "-d", "x"]).contains("cannot be used with"));
        assert!(message(&[]).contains("IMAGE"));
    }
}
