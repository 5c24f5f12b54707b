//! `cocoon exec`: run a command in a running container and wait for it.

use super::error::{Error, RpcResult};
use super::parse;
use super::resolve;
use crate::cri_client::CriClient;
use k8s_cri::v1::ExecSyncRequest;
use std::io::Write;
use std::time::Duration;

/// Run a command in a running container; print its output and exit with its exit code.
///
/// The command runs to completion before anything is printed (CRI ExecSync): no terminal
/// and no input, since cocoond does not serve CRI's streaming Exec yet.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// How long the command may run (0: no limit).
    #[arg(long, default_value = "10s", value_parser = parse::duration)]
    pub timeout: Duration,
    /// Container id, unique id prefix or name.
    pub container: String,
    /// The command and its arguments (after `--` when they start with `-`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// CRI takes seconds: rounded up, so that a limit under one second stays a limit.
pub fn whole_seconds(d: Duration) -> i64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// How long past the command's own limit cocoond may take to answer.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// Returns the command's exit code.
pub async fn exec(
    client: &mut CriClient,
    args: &ExecArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<i32, Error> {
    let container = resolve::find_container(client, &args.container).await?;
    let request = ExecSyncRequest {
        container_id: container.id,
        cmd: args.command.clone(),
        timeout: whole_seconds(args.timeout),
    };
    let call = client.runtime.exec_sync(request);
    let response = if args.timeout.is_zero() {
        call.await
    } else {
        let limit = args.timeout + ANSWER_GRACE;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| Error::Timeout {
                what: "exec",
                after: limit,
            })?
    }
    .rpc("exec")?;
    out.write_all(&response.stdout)?;
    out.flush()?;
    err.write_all(&response.stderr)?;
    err.flush()?;
    Ok(response.exit_code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        exec: ExecArgs,
    }

    #[test]
    fn the_command_follows_the_container_with_or_without_dashes() {
        let cli = Cli::try_parse_from(["x", "web", "--", "ls", "-l"]).unwrap();
        assert_eq!(cli.exec.container, "web");
        assert_eq!(cli.exec.command, ["ls", "-l"]);
        assert_eq!(cli.exec.timeout, Duration::from_secs(10));
        let cli = Cli::try_parse_from(["x", "--timeout", "1m", "web", "ls", "-l"]).unwrap();
        assert_eq!(cli.exec.command, ["ls", "-l"]);
        assert_eq!(cli.exec.timeout, Duration::from_secs(60));
        assert!(Cli::try_parse_from(["x", "web"]).is_err());
    }

    #[test]
    fn timeouts_round_up_to_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(10)), 10);
    }
}
