//! Containers through the agent as a host process, with a busybox rootfs.
//!
//! What needs cgroup v2 controllers (memory limits and OOM kills, memory statistics,
//! live limit updates) cannot run here: this host's cgroups are hybrid, its cpu,
//! memory, pids and io controllers are bound to v1 hierarchies, so the unified
//! hierarchy the agent uses (/sys/fs/cgroup/unified) offers none of them
//! (`cgroup.controllers` lists only hugetlb). Those cases run inside the guest VM
//! (tests/tests/containers.rs).

mod common;

use cocoon_proto::agent::v1::*;
use common::pod::*;
use common::Agent;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_stream::StreamExt;

struct Pod {
    agent: Agent,
    client: Client,
    rootfs: PathBuf,
    id: String,
}

async fn pod(id: &str, shared: &[Namespace]) -> Pod {
    let agent = Agent::start();
    let rootfs = busybox_rootfs(agent.dir.path());
    let mut client = Client::new(agent.channel().await);
    client
        .create_sandbox(sandbox_request(id, &[agent.dir.path()], shared))
        .await
        .unwrap_or_else(|e| panic!("create sandbox: {e}"));
    Pod {
        agent,
        client,
        rootfs,
        id: id.into(),
    }
}

impl Pod {
    fn req(&self, id: &str, args: &[&str]) -> CreateContainerRequest {
        container_request(&self.id, id, &self.rootfs, spec(args, false, no_limits()))
    }

    async fn up(&mut self, id: &str, args: &[&str]) {
        let req = self.req(id, args);
        run(&mut self.client, req).await;
    }

    fn cgroup(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/unified").join(format!(
            "cocoon-test-{}-{}",
            std::process::id(),
            self.id
        ))
    }

    /// Children of the agent still alive (the pause process, containers, execs); not
    /// the agent's helper server, which serves every pod for the agent's whole life.
    fn agent_children(&self) -> Vec<u32> {
        let me = self.agent.pid().to_string();
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                    let rest = s.rsplit(')').next().unwrap_or("");
                    let mut f = rest.split_whitespace();
                    let state = f.next().unwrap_or("");
                    f.next() == Some(me.as_str()) && state != "Z"
                })
            })
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                cmdline != b"cocoon-agent\0__helper\0serve\0"
            })
            .collect()
    }

    /// Destroys the pod and checks nothing of it is left: no process, no cgroup, no
    /// directory or mount (as the agent sees them), no libcontainer state.
    async fn destroy_and_check(mut self) {
        self.client
            .destroy_sandbox(DestroySandboxRequest {
                sandbox_id: self.id.clone(),
            })
            .await
            .unwrap();
        self.assert_clean();
    }

    fn assert_clean(&self) {
        let dir = self
            .agent
            .view(&self.agent.state_dir.join("sandboxes").join(&self.id));
        assert!(!dir.exists(), "sandbox dir left: {}", dir.display());
        let lc = self.agent.view(&self.agent.state_dir.join("libcontainer"));
        let left: Vec<_> = std::fs::read_dir(&lc)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "libcontainer state left: {left:?}");
        assert!(
            !self.cgroup().exists(),
            "cgroup left: {}",
            self.cgroup().display()
        );
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mountinfo", self.agent.pid())).unwrap();
        assert!(!mounts.contains("/sandboxes/"), "mounts left:\n{mounts}");
        let mut children = self.agent_children();
        for _ in 0..100 {
            if children.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            children = self.agent_children();
        }
        assert!(children.is_empty(), "processes left: {children:?}");
    }
}

#[tokio::test]
async fn busybox_prints_to_stdout_and_exits_zero() {
    let mut p = pod("p1", &[]).await;
    let mut events = p
        .client
        .events(EventsRequest {})
        .await
        .unwrap()
        .into_inner();
    p.up(
        "c1",
        &["sh", "-c", "echo hello from busybox; echo oops >&2"],
    )
    .await;
    let out = read_all(&mut p.client, "c1", "", OutputStream::Stdout).await;
    assert_eq!(out, "hello from busybox\n");
    let err = read_all(&mut p.client, "c1", "", OutputStream::Stderr).await;
    assert_eq!(err, "oops\n");
    let exit = wait(&mut p.client, "c1", "").await;
    assert_eq!(exit.exit_code, 0);
    assert_eq!(reason(&exit), ExitReason::Completed);
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(event.container_id, "c1");
    assert!(matches!(event.kind, Some(event::Kind::Exit(e)) if e.pid == exit.pid));
    p.client
        .remove_container(RemoveContainerRequest {
            container_id: "c1".into(),
            force: false,
        })
        .await
        .unwrap();
    p.destroy_and_check().await;
}

#[tokio::test]
async fn exec_into_a_running_container() {
    let mut p = pod("p2", &[]).await;
    p.up("c1", &["sleep", "1000"]).await;
    let (out, exit) = exec(&mut p.client, "c1", "e1", &["sh", "-c", "echo $$"]).await;
    let pid: u32 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {out:?}"));
    assert!(pid > 1, "the exec is not the container's init");
    assert_eq!(reason(&exit), ExitReason::Completed);
    let (out, _) = exec(
        &mut p.client,
        "c1",
        "e2",
        &["cat", "/etc/resolv.conf", "/etc/hostname"],
    )
    .await;
    assert!(out.contains("nameserver 10.0.0.10"), "{out}");
    assert!(out.contains("pod-host"), "{out}");
    let (out, _) = exec(&mut p.client, "c1", "e3", &["hostname"]).await;
    assert_eq!(out.trim(), "pod-host");
    // An exec waited with `forget` leaves the agent's table: its id is free again.
    let forget = |exec_id: &str| WaitProcessRequest {
        container_id: "c1".into(),
        exec_id: exec_id.into(),
        forget: true,
    };
    p.client.wait_process(forget("e3")).await.expect("wait e3");
    let gone = p.client.wait_process(forget("e3")).await.unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");
    let (out, _) = exec(&mut p.client, "c1", "e3", &["echo", "again"]).await;
    assert_eq!(out, "again\n");
    let procs = p
        .client
        .list_processes(ListProcessesRequest {
            container_id: "c1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!procs.pids.is_empty());
    let stats = p
        .client
        .stats_container(StatsContainerRequest {
            container_id: "c1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stats.cpu.unwrap().usage_usec > 0, "cpu.stat is read");
    p.destroy_and_check().await;
}

#[tokio::test]
async fn tty_exec_sees_the_resize() {
    let mut p = pod("p3", &[]).await;
    p.up("c1", &["sleep", "1000"]).await;
    p.client
        .exec_process(ExecProcessRequest {
            container_id: "c1".into(),
            exec_id: "tty".into(),
            process: Some(Process {
                args: vec!["sh".into()],
                terminal: true,
                stdin: true,
                ..Default::default()
            }),
            rows: 24,
            cols: 80,
        })
        .await
        .unwrap();
    p.client
        .resize_tty(ResizeTtyRequest {
            container_id: "c1".into(),
            exec_id: "tty".into(),
            rows: 40,
            cols: 100,
        })
        .await
        .unwrap();
    let input = StdinChunk {
        container_id: "c1".into(),
        exec_id: "tty".into(),
        data: b"stty size\nexit 3\n".to_vec(),
    };
    p.client
        .write_stdin(tokio_stream::iter([input]))
        .await
        .unwrap();
    let out = read_all(&mut p.client, "c1", "tty", OutputStream::Stdout).await;
    assert!(out.contains("40 100"), "stty size after resize: {out:?}");
    let exit = wait(&mut p.client, "c1", "tty").await;
    assert_eq!(exit.exit_code, 3);
    assert_eq!(reason(&exit), ExitReason::Error);
    let err = p
        .client
        .read_output(ReadOutputRequest {
            container_id: "c1".into(),
            exec_id: "tty".into(),
            stream: OutputStream::Stderr as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    p.destroy_and_check().await;
}

#[tokio::test]
async fn sigterm_stops_a_sleep_container() {
    // In a shared PID namespace sleep is not PID 1 (which would ignore SIGTERM).
    let mut p = pod(
        "p4",
        &[
            Namespace::Pid,
            Namespace::Network,
            Namespace::Ipc,
            Namespace::Uts,
        ],
    )
    .await;
    p.up("c1", &["sleep", "1000"]).await;
    p.client
        .signal_process(SignalProcessRequest {
            container_id: "c1".into(),
            exec_id: String::new(),
            signal: 15,
        })
        .await
        .unwrap();
    let exit = wait(&mut p.client, "c1", "").await;
    assert_eq!(reason(&exit), ExitReason::Signaled);
    assert_eq!((exit.signal, exit.exit_code), (15, 143));
    p.destroy_and_check().await;
}

#[tokio::test]
async fn stdin_eof_reaches_the_process_and_late_readers_get_everything() {
    let mut p = pod("p5", &[]).await;
    let mut req = p.req("cat", &["cat"]);
    req.stdin = true;
    run(&mut p.client, req).await;
    let chunks = ["abc", "def"].map(|s| StdinChunk {
        container_id: "cat".into(),
        exec_id: String::new(),
        data: s.into(),
    });
    let sent = p
        .client
        .write_stdin(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.bytes, 6);
    let exit = wait(&mut p.client, "cat", "").await;
    assert_eq!(reason(&exit), ExitReason::Completed, "cat saw EOF");
    assert_eq!(
        read_all(&mut p.client, "cat", "", OutputStream::Stdout).await,
        "abcdef"
    );

    // 3 MiB with nobody reading: more than the agent buffers, so the writer must wait
    // for a reader (backpressure), and then every byte arrives.
    p.up("big", &["dd", "if=/dev/zero", "bs=65536", "count=48"])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waited =
        tokio::time::timeout(Duration::from_millis(300), wait(&mut p.client, "big", "")).await;
    assert!(
        waited.is_err(),
        "the writer should be held back, not finished"
    );
    let out = read_all(&mut p.client, "big", "", OutputStream::Stdout).await;
    assert_eq!(out.len(), 3 * 1024 * 1024);
    assert_eq!(
        reason(&wait(&mut p.client, "big", "").await),
        ExitReason::Completed
    );
    p.destroy_and_check().await;
}

#[tokio::test]
async fn pod_containers_share_namespaces_and_not_writes() {
    let mut p = pod(
        "p6",
        &[
            Namespace::Network,
            Namespace::Ipc,
            Namespace::Uts,
            Namespace::Pid,
        ],
    )
    .await;
    p.up("a", &["sh", "-c", "echo a > /written-by-a; sleep 1000"])
        .await;
    p.up("b", &["sleep", "1000"]).await;
    let ns = |c: &'static str, n: &'static str| {
        let mut client = p.client.clone();
        async move {
            let (out, _) = exec(
                &mut client,
                c,
                &format!("ns-{n}"),
                &["readlink", &format!("/proc/self/ns/{n}")],
            )
            .await;
            out
        }
    };
    assert_eq!(ns("a", "net").await, ns("b", "net").await);
    assert_eq!(ns("a", "pid").await, ns("b", "pid").await);
    assert_ne!(ns("a", "mnt").await, ns("b", "mnt").await);
    // b sees a's sleep in the shared PID namespace, but not a's file.
    let (ps, _) = exec(&mut p.client, "b", "ps", &["ps"]).await;
    assert!(ps.matches("sleep 1000").count() >= 2, "{ps}");
    let (ls, _) = exec(&mut p.client, "b", "ls", &["ls", "/"]).await;
    assert!(!ls.contains("written-by-a"), "{ls}");
    let (ls, _) = exec(&mut p.client, "a", "ls", &["ls", "/"]).await;
    assert!(ls.contains("written-by-a"), "{ls}");
    assert!(
        !p.rootfs.join("written-by-a").exists(),
        "the image rootfs was written"
    );

    // Without a shared PID namespace, each container has its own.
    let mut q = pod("p7", &[]).await;
    q.up("a", &["sleep", "1000"]).await;
    q.up("b", &["sleep", "1000"]).await;
    let (a, _) = exec(&mut q.client, "a", "x", &["readlink", "/proc/self/ns/pid"]).await;
    let (b, _) = exec(&mut q.client, "b", "x", &["readlink", "/proc/self/ns/pid"]).await;
    assert_ne!(a, b);
    let (a, _) = exec(&mut q.client, "a", "y", &["readlink", "/proc/self/ns/net"]).await;
    let (b, _) = exec(&mut q.client, "b", "y", &["readlink", "/proc/self/ns/net"]).await;
    assert_eq!(a, b);
    p.destroy_and_check().await;
    q.destroy_and_check().await;
}
