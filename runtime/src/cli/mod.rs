//! The `cocoon` command line for people: talks CRI to cocoond.
//!
//! One module per command, each with its clap arguments and a function that takes a
//! [`CriClient`] and the writers to print to, so that a test can run a command against a
//! daemon and read what it printed. [`output`] formats, [`parse`] reads option values,
//! [`resolve`] finds what an id prefix or a name means.

pub mod error;
pub mod exec;
pub mod images;
pub mod info;
pub mod logs;
pub mod output;
pub mod parse;
pub mod pods;
pub mod ps;
pub mod pull;
pub mod resolve;
pub mod rm;
pub mod run;
pub mod run_spec;
pub mod stop;

#[cfg(test)]
mod against_fake;
#[cfg(test)]
mod fake_cri;

pub use error::{describe, Error};

use crate::cri_client::{self, CriClient, DEFAULT_SOCKET};
use std::ffi::OsString;
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable naming cocoond's socket.
pub const SOCKET_ENV: &str = "COCOON_SOCKET";

/// The commands that talk to cocoond.
#[derive(Debug, clap::Subcommand)]
pub enum CriCommand {
    /// Run a container in a new pod VM, print its output, exit with its exit code.
    Run(run::RunArgs),
    /// List containers (running ones unless -a).
    Ps(ps::PsArgs),
    /// List pods.
    Pods(pods::PodsArgs),
    /// Run a command in a running container; exit with its exit code.
    ///
    /// The command runs to completion before its output is printed (CRI ExecSync): there is
    /// no terminal and no input, since cocoond does not serve CRI's streaming Exec yet.
    Exec(exec::ExecArgs),
    /// Print a container's output: its stdout to stdout, its stderr to stderr.
    Logs(logs::LogsArgs),
    /// List the images cocoond holds.
    Images(images::ImagesArgs),
    /// Pull an image.
    ///
    /// CRI reports no progress while an image is pulled: a spinner shows the time taken.
    Pull(pull::PullArgs),
    /// Stop containers or pods (each ID is tried as a container first, then as a pod).
    Stop(stop::StopArgs),
    /// Remove containers, or pods with all their containers.
    ///
    /// Each ID is tried as a container first, then as a pod. A pod `cocoon run` made is
    /// removed with its last container.
    Rm(rm::RmArgs),
    /// Print the client's and cocoond's versions.
    Version,
    /// Print cocoond's conditions and runtime handlers.
    Info,
}

/// The socket to use: the flag's, else `$COCOON_SOCKET`'s, else the default.
pub fn socket_path(flag: Option<PathBuf>, env: Option<OsString>) -> PathBuf {
    flag.or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// Connects to cocoond at `socket` and runs `command`; returns the exit code. `interrupt`
/// is ^C (only `run` listens for it).
pub async fn execute(
    socket: &Path,
    command: &CriCommand,
    out: &mut impl Write,
    err: &mut impl Write,
    interrupt: impl Future<Output = ()>,
) -> Result<i32, Error> {
    if let CriCommand::Version = command {
        info::client_version(out)?;
        out.flush()?;
    }
    let mut client = cri_client::connect(socket).await?;
    dispatch(&mut client, command, out, err, interrupt).await
}

/// Runs `command` with a connected client; returns the exit code.
pub async fn dispatch(
    client: &mut CriClient,
    command: &CriCommand,
    out: &mut impl Write,
    err: &mut impl Write,
    interrupt: impl Future<Output = ()>,
) -> Result<i32, Error> {
    let done = |()| 0;
    match command {
        CriCommand::Run(args) => run::run(client, args, out, err, interrupt).await,
        CriCommand::Ps(args) => ps::ps(client, args, out).await.map(done),
        CriCommand::Pods(args) => pods::pods(client, args, out).await.map(done),
        CriCommand::Exec(args) => exec::exec(client, args, out, err).await,
        CriCommand::Logs(args) => logs::logs(client, args, out, err).await.map(done),
        CriCommand::Images(args) => images::images(client, args, out).await.map(done),
        CriCommand::Pull(args) => pull::pull(client, args, out).await.map(done),
        CriCommand::Stop(args) => stop::stop(client, args, out, err).await,
        CriCommand::Rm(args) => rm::rm(client, args, out, err).await,
        CriCommand::Version => info::version(client, out).await.map(done),
        CriCommand::Info => info::info(client, out).await.map(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_flag_beats_the_environment_which_beats_the_default() {
        let flag = Some(PathBuf::from("/a.sock"));
        let env = Some(OsString::from("/b.sock"));
        assert_eq!(socket_path(flag, env.clone()), Path::new("/a.sock"));
        assert_eq!(socket_path(None, env), Path::new("/b.sock"));
        assert_eq!(
            socket_path(None, Some("".into())),
            Path::new(DEFAULT_SOCKET)
        );
        assert_eq!(socket_path(None, None), Path::new(DEFAULT_SOCKET));
    }

    #[tokio::test]
    async fn version_prints_the_client_before_failing_to_connect() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("none.sock");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = execute(
            &socket,
            &CriCommand::Version,
            &mut out,
            &mut err,
            std::future::pending(),
        )
        .await;
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("Client version:"));
        let message = describe(&result.unwrap_err());
        assert!(message.contains("is cocoond running?"), "{message}");
        assert!(message.contains("none.sock"), "{message}");
    }
}
