//! The commands end to end, over a unix socket, against [`fake_cri`](super::fake_cri).

use super::fake_cri::{serve, FakeCri};
use super::{describe, dispatch, CriCommand};
use crate::cri_client::{connect, CriClient};
use clap::Parser;
use k8s_cri::v1::ContainerState;
use std::time::Duration;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: CriCommand,
}

struct Harness {
    _dir: tempfile::TempDir,
    fake: FakeCri,
    client: CriClient,
}

/// What a command returned and printed.
struct Ran {
    code: Result<i32, String>,
    out: String,
    err: String,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (socket, fake) = serve(dir.path());
        let client = connect(&socket).await.unwrap();
        Harness {
            _dir: dir,
            fake,
            client,
        }
    }

    async fn run_until(&mut self, args: &[&str], interrupt: Duration) -> Ran {
        let cli = Cli::try_parse_from(std::iter::once("cocoon").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = dispatch(
            &mut self.client,
            &cli.command,
            &mut out,
            &mut err,
            tokio::time::sleep(interrupt),
        )
        .await
        .map_err(|e| describe(&e));
        Ran {
            code,
            out: String::from_utf8(out).unwrap(),
            err: String::from_utf8(err).unwrap(),
        }
    }

    async fn run(&mut self, args: &[&str]) -> Ran {
        self.run_until(args, Duration::from_secs(3600)).await
    }
}

#[tokio::test]
async fn run_prints_the_output_and_exits_with_the_code() {
    let mut h = Harness::new().await;
    let ran = h
        .run(&[
            "run",
            "--rm",
            "--name",
            "hello",
            "busybox",
            "--",
            "out:hello",
            "part:wor",
            "err:oops",
            "part:ld",
            "out:!",
            "exit:3",
        ])
        .await;
    assert_eq!(ran.code, Ok(3), "{}", ran.err);
    assert_eq!(ran.out, "hello\nworld!\n");
    assert_eq!(ran.err, "oops\n");
    let state = h.fake.state();
    assert!(state.pods.is_empty(), "--rm left {:?}", state.pods);
    assert_eq!(
        state.images[0].repo_tags,
        ["busybox"],
        "pulled when missing"
    );
}

#[tokio::test]
async fn a_detached_container_can_be_listed_logged_execed_stopped_and_removed() {
    let mut h = Harness::new().await;
    let ran = h
        .run(&["run", "-d", "--name", "web", "nginx", "out:ready", "sleep"])
        .await;
    assert_eq!(ran.code, Ok(0));
    let id = ran.out.trim().to_string();
    assert!(id.starts_with('c'), "{}", ran.out);

    let ps = h.run(&["ps"]).await;
    let lines: Vec<&str> = ps.out.lines().collect();
    assert!(lines[0].starts_with("CONTAINER"), "{}", ps.out);
    assert!(
        lines[1].contains("nginx") && lines[1].contains("Running") && lines[1].ends_with("web")
    );
    assert_eq!(h.run(&["ps", "-q"]).await.out, format!("{id}\n"));
    assert!(h.run(&["pods"]).await.out.contains("web    default"));

    let mut logs = String::new();
    for _ in 0..100 {
        logs = h.run(&["logs", "--timestamps", "web"]).await.out;
        if !logs.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(logs.ends_with("Z ready\n"), "{logs:?}");

    let exec = h.run(&["exec", &id[..5], "--", "echo", "hi"]).await;
    assert_eq!((exec.code, exec.out.as_str()), (Ok(0), "echo hi\n"));
    assert_eq!(exec.err, "timeout 10\n");
    assert_eq!(h.run(&["exec", "web", "false"]).await.code, Ok(1));

    let rm = h.run(&["rm", "web"]).await;
    assert_eq!(rm.code, Ok(1));
    assert!(
        rm.err.contains("is running: stop it first, or use -f"),
        "{}",
        rm.err
    );

    assert_eq!(h.run(&["stop", "web"]).await.out, "web\n");
    assert_eq!(h.run(&["ps"]).await.out.lines().count(), 1);
    assert!(h.run(&["ps", "-a"]).await.out.contains("Exited"));
    assert_eq!(h.run(&["rm", "web"]).await.out, "web\n");
    let state = h.fake.state();
    assert!(state.containers.is_empty() && state.pods.is_empty());
}

#[tokio::test]
async fn interrupting_a_run_with_rm_removes_its_pod() {
    let mut h = Harness::new().await;
    let ran = h
        .run_until(
            &["run", "--rm", "busybox", "out:1", "sleep"],
            Duration::from_millis(800),
        )
        .await;
    assert_eq!(ran.code, Ok(130));
    assert_eq!(ran.out, "1\n");
    assert!(h.fake.state().pods.is_empty());
}

#[tokio::test]
async fn logs_follow_until_the_container_exits() {
    let mut h = Harness::new().await;
    let steps: Vec<String> = (0..20).map(|i| format!("out:{i}")).collect();
    let mut args = vec!["run", "-d", "--name", "counter", "busybox"];
    args.extend(steps.iter().map(String::as_str));
    assert_eq!(h.run(&args).await.code, Ok(0));
    let logs = h.run(&["logs", "-f", "--tail", "100", "counter"]).await;
    let expected: String = (0..20).map(|i| format!("{i}\n")).collect();
    assert_eq!(logs.out, expected);
    let tail = h.run(&["logs", "--tail", "2", "counter"]).await;
    assert_eq!(tail.out, "18\n19\n");
}

#[tokio::test]
async fn ids_resolve_by_prefix_and_ambiguity_is_named() {
    let mut h = Harness::new().await;
    for name in ["a", "b"] {
        let ran = h
            .run(&["run", "-d", "--name", name, "busybox", "exit:0"])
            .await;
        assert_eq!(ran.code, Ok(0));
    }
    let ran = h.run(&["rm", "c"]).await;
    assert_eq!(ran.code, Ok(1));
    assert!(
        ran.err.contains("\"c\" could be any of these containers:") && ran.err.contains("(a)"),
        "{}",
        ran.err
    );
    let ran = h.run(&["stop", "nothing"]).await;
    assert!(
        ran.err.contains("no container or pod \"nothing\""),
        "{}",
        ran.err
    );
    // A pod found by name: stopped, then removed with its containers.
    let pod = h.fake.state().pods[0].id.clone();
    assert_eq!(h.run(&["stop", &pod[..4]]).await.code, Ok(0));
    assert_eq!(h.run(&["rm", &pod[..4]]).await.code, Ok(0));
    let state = h.fake.state();
    assert_eq!(state.pods.len(), 1);
    assert_eq!(state.containers.len(), 1);
    assert_ne!(
        state.containers[0].container.state,
        ContainerState::ContainerRunning as i32
    );
}

#[tokio::test]
async fn images_pull_version_and_info() {
    let mut h = Harness::new().await;
    let pulled = h.run(&["pull", "busybox:1.36"]).await;
    assert_eq!(pulled.code, Ok(0));
    assert!(
        pulled.out.starts_with("Pulled busybox:1.36 in "),
        "{}",
        pulled.out
    );
    assert!(pulled.out.contains("Image ID: sha256:") && pulled.out.ends_with("Size: 4.26MB\n"));
    let images = h.run(&["images"]).await.out;
    assert!(
        images.lines().nth(1).unwrap().starts_with("busybox   1.36"),
        "{images}"
    );

    let missing = h.run(&["pull", "missing/thing"]).await;
    assert_eq!(
        missing.code,
        Err("pull image: missing/thing: manifest unknown (NotFound)".into())
    );
    let never = h.run(&["run", "--pull", "never", "alpine"]).await;
    assert_eq!(
        never.code,
        Err("image alpine is not present and --pull is never".into())
    );
    assert!(h.fake.state().pods.is_empty());

    let version = h.run(&["version"]).await.out;
    assert!(
        version.contains("Runtime name:        fake-cocoond"),
        "{version}"
    );
    assert!(h.run(&["info"]).await.out.contains("RuntimeReady   true"));
}
