//! Containers inside a real pod VM (QEMU; TCG on these machines): what the host-process
//! tests of the agent cannot check on a hybrid-cgroup host — memory limits, OOM kills,
//! memory statistics, live updates — plus the basics once more in the guest.
//!
//! The guest image must carry a busybox rootfs at [`GUEST_ROOTFS`] (guest-image/build.sh
//! installs Debian's busybox-static there).

use cocoon_proto::agent::v1::*;
use cocoon_proto::AGENT_VSOCK_PORT;
use cocoon_runtime::agent_client::vsock_channel;
use cocoon_runtime::pod_vm::PodVm;
use cocoon_tests::containers::*;
use cocoon_tests::{assert_nothing_left, scratch, validate, vm_config, READY_TIMEOUT};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_in_the_guest() {
    let dir = scratch();
    let mut cfg = vm_config(dir.path(), "vm");
    cfg.vcpus = 2;
    cfg.memory_mib = 512;
    let run_dir = cfg.run_dir.clone();
    let (pod, _, _) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("boot: {e}"));
    let channel = vsock_channel(pod.vm.vsock_socket().to_path_buf(), AGENT_VSOCK_PORT)
        .await
        .expect("containers channel");
    let mut c = Client::new(channel);
    c.create_sandbox(sandbox(
        "pod",
        &[
            Namespace::Network,
            Namespace::Ipc,
            Namespace::Uts,
            Namespace::Pid,
        ],
    ))
    .await
    .unwrap_or_else(|e| panic!("create sandbox: {e}"));

    // stdout through the stream, exit 0.
    run(
        &mut c,
        container("pod", "hello", spec(&["echo", "hello"], false, "{}")),
    )
    .await;
    assert_eq!(read_all(&mut c, "hello", "").await, "hello\n");
    assert_eq!(
        reason(&wait(&mut c, "hello", "").await),
        ExitReason::Completed
    );

    // A long-running container with a memory limit: exec, stats, live update.
    let limited = r#"{"memory":{"limit":67108864},"pids":{"limit":100}}"#;
    run(
        &mut c,
        container("pod", "app", spec(&["sleep", "1000"], false, limited)),
    )
    .await;
    let (out, exit) = exec(&mut c, "app", "pid", &["sh", "-c", "echo $$"]).await;
    assert!(out.trim().parse::<u32>().is_ok(), "{out:?}");
    assert_eq!(reason(&exit), ExitReason::Completed);
    let stats = c
        .stats_container(StatsContainerRequest {
            container_id: "app".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let mem = stats.memory.unwrap();
    assert!(mem.usage_bytes > 0, "memory usage {mem:?}");
    assert_eq!(mem.limit_bytes, 64 * 1024 * 1024);
    assert_eq!(stats.pids.unwrap().limit, 100);
    let (max, _) = exec(&mut c, "app", "max1", &["cat", "/sys/fs/cgroup/memory.max"]).await;
    assert_eq!(max.trim(), "67108864");
    c.update_container(UpdateContainerRequest {
        container_id: "app".into(),
        resources_json: r#"{"memory":{"limit":33554432}}"#.into(),
    })
    .await
    .unwrap();
    let (max, _) = exec(&mut c, "app", "max2", &["cat", "/sys/fs/cgroup/memory.max"]).await;
    assert_eq!(max.trim(), "33554432", "the container reads its new limit");

    // A tty exec sees a resize.
    c.exec_process(ExecProcessRequest {
        container_id: "app".into(),
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
    c.resize_tty(ResizeTtyRequest {
        container_id: "app".into(),
        exec_id: "tty".into(),
        rows: 50,
        cols: 132,
    })
    .await
    .unwrap();
    let input = StdinChunk {
        container_id: "app".into(),
        exec_id: "tty".into(),
        data: b"stty size\nexit\n".to_vec(),
    };
    c.write_stdin(tokio_stream_iter(input)).await.unwrap();
    let out = read_all(&mut c, "app", "tty").await;
    assert!(out.contains("50 132"), "{out:?}");

    // SIGTERM stops sleep (not PID 1: the pod shares its PID namespace).
    c.signal_process(SignalProcessRequest {
        container_id: "app".into(),
        exec_id: String::new(),
        signal: 15,
    })
    .await
    .unwrap();
    let exit = wait(&mut c, "app", "").await;
    assert_eq!((reason(&exit), exit.signal), (ExitReason::Signaled, 15));

    // Over its memory limit: OOM-killed, reported as such, on the event feed too.
    let mut events = c.events(EventsRequest {}).await.unwrap().into_inner();
    let hog = spec(
        &["sh", "-c", "x=0123456789; while true; do x=$x$x; done"],
        false,
        r#"{"memory":{"limit":16777216}}"#,
    );
    run(&mut c, container("pod", "hog", hog)).await;
    let exit = wait(&mut c, "hog", "").await;
    assert_eq!(reason(&exit), ExitReason::OomKilled, "{exit:?}");
    let mut saw_oom = false;
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .map(|m| m.transpose())
    {
        if e.container_id == "hog" && matches!(e.kind, Some(event::Kind::Oom(_))) {
            saw_oom = true;
            break;
        }
    }
    assert!(saw_oom, "no OOM event");

    // Two containers of the pod share the network and PID namespaces.
    run(
        &mut c,
        container("pod", "a", spec(&["sleep", "1000"], false, "{}")),
    )
    .await;
    run(
        &mut c,
        container("pod", "b", spec(&["sleep", "1000"], false, "{}")),
    )
    .await;
    for ns in ["net", "pid"] {
        let link = format!("/proc/self/ns/{ns}");
        let (a, _) = exec(&mut c, "a", ns, &["readlink", &link]).await;
        let (b, _) = exec(&mut c, "b", ns, &["readlink", &link]).await;
        assert_eq!(a, b, "{ns} namespace");
    }

    // Bad input: a rootfs outside the pod's storage.
    let mut bad = container("pod", "bad", spec(&["true"], false, "{}"));
    bad.rootfs = "/etc".into();
    let err = c.create_container(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("rootfs"), "{err}");

    c.destroy_sandbox(DestroySandboxRequest {
        sandbox_id: "pod".into(),
    })
    .await
    .unwrap();
    drop(c);
    pod.shutdown(Duration::from_secs(20)).await;
    assert_nothing_left(&run_dir);
}

fn tokio_stream_iter(chunk: StdinChunk) -> impl futures::Stream<Item = StdinChunk> {
    futures::stream::iter([chunk])
}
