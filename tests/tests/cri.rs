//! cocoond end to end: a real daemon, real pod VMs (QEMU; TCG here), the built-in test
//! image, driven through the CRI over its socket.

use cocoon_runtime::config::TEST_IMAGE;
use cocoon_tests::cri::*;
use k8s_cri::v1::*;
use std::path::Path;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Code;

const EXIT_WAIT: Duration = Duration::from_secs(120);

/// The whole lifecycle of a pod with two containers: logs in CRI format, ExecSync (and
/// its timeout), stats, events, a volume written in the guest and read on the host,
/// stop with a timeout, idempotent stop/remove, and nothing left at the end.
#[tokio::test(flavor = "multi_thread")]
async fn pod_lifecycle() {
    let d = Cocoond::start("").await;
    let mut c = d.client().await;
    let mut events = c
        .runtime
        .get_container_events(GetEventsRequest {})
        .await
        .expect("events")
        .into_inner();

    let logs = d.log_dir("lifecycle");
    let pod_cfg = pod_config("lifecycle", &logs);
    let pod = run_pod(&mut c, pod_cfg.clone()).await;
    let ps = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    assert_eq!(
        ps.status.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );

    // A volume: the container writes into it, the host reads it.
    let vol = d.dir.path().join("volume");
    std::fs::create_dir(&vol).unwrap();
    std::fs::write(vol.join("in.txt"), "from the host\n").unwrap();
    let mut job = container_config(
        "job",
        TEST_IMAGE,
        &["sh", "-c", "echo hello; echo oops >&2; cat /data/in.txt; echo written > /data/out.txt; printf 'no newline'"],
    );
    job.mounts.push(Mount {
        container_path: "/data".into(),
        host_path: vol.to_string_lossy().into(),
        ..Default::default()
    });
    let job_id = start_container(&mut c, &pod, &pod_cfg, job).await;
    let st = wait_exited(&mut c, &job_id, EXIT_WAIT).await;
    assert_eq!(st.exit_code, 0, "{st:?}");
    assert_eq!(st.reason, "Completed");
    assert!(st.finished_at >= st.started_at && st.started_at >= st.created_at);
    assert_eq!(
        std::fs::read_to_string(vol.join("out.txt")).unwrap(),
        "written\n"
    );

    // The log: CRI lines, both streams, the last line without newline as a full line.
    let log = std::fs::read_to_string(&st.log_path).expect("log file");
    let lines: Vec<(&str, &str, &str)> = log
        .lines()
        .map(|l| {
            let mut f = l.splitn(4, ' ');
            let ts = f.next().unwrap();
            assert!(chrono_like(ts), "timestamp {ts:?} in {l:?}");
            (f.next().unwrap(), f.next().unwrap(), f.next().unwrap_or(""))
        })
        .collect();
    assert!(lines.contains(&("stdout", "F", "hello")), "{log}");
    assert!(lines.contains(&("stderr", "F", "oops")), "{log}");
    assert!(lines.contains(&("stdout", "F", "from the host")), "{log}");
    assert!(lines.contains(&("stdout", "F", "no newline")), "{log}");

    // A long-running container: ExecSync, its timeout, stats, stop with a timeout.
    let svc = start_container(
        &mut c,
        &pod,
        &pod_cfg,
        container_config(
            "svc",
            TEST_IMAGE,
            &[
                "sh",
                "-c",
                "trap 'echo bye; exit 0' TERM; while true; do sleep 0.1; done",
            ],
        ),
    )
    .await;
    let out = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: svc.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "echo $((6*7)); echo e >&2; exit 3".into(),
            ],
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(
        (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
        (&b"42\n"[..], &b"e\n"[..], 3)
    );
    let timed_out = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: svc.clone(),
            cmd: vec!["sleep".into(), "60".into()],
            timeout: 1,
        })
        .await
        .expect_err("timeout");
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");
    let stats = c
        .runtime
        .container_stats(ContainerStatsRequest {
            container_id: svc.clone(),
        })
        .await
        .expect("ContainerStats")
        .into_inner()
        .stats
        .unwrap();
    assert!(
        stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value)
            .unwrap_or(0)
            > 0,
        "memory in use"
    );
    assert!(stats.cpu.and_then(|m| m.usage_core_nano_seconds).is_some());
    let listed = c
        .runtime
        .list_containers(ListContainersRequest {
            filter: Some(ContainerFilter {
                pod_sandbox_id: pod.clone(),
                state: Some(ContainerStateValue {
                    state: ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(
        listed.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [svc.as_str()]
    );

    // Pod stats carry the running container.
    let pod_stats = c
        .runtime
        .pod_sandbox_stats(PodSandboxStatsRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    let linux = pod_stats.linux.unwrap();
    assert!(linux
        .containers
        .iter()
        .any(|s| s.attributes.as_ref().is_some_and(|a| a.id == svc)));
    assert!(linux.memory.and_then(|m| m.working_set_bytes).is_some());

    // A live limit change that the container reads back from its own cgroup.
    c.runtime
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: svc.clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 96 << 20,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("UpdateContainerResources");
    let out = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: svc.clone(),
            cmd: vec!["cat".into(), "/sys/fs/cgroup/memory.max".into()],
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (96u64 << 20).to_string()
    );
    let st = status(&mut c, &svc).await;
    let limit = st
        .resources
        .and_then(|r| r.linux)
        .map(|l| l.memory_limit_in_bytes);
    assert_eq!(limit, Some(96 << 20), "ContainerStatus shows the new limit");

    // kubelet's log rotation: the file is renamed, ReopenContainerLog makes a new one.
    let rotated = format!("{}.1", st.log_path);
    std::fs::rename(&st.log_path, &rotated).unwrap();
    c.runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: svc.clone(),
        })
        .await
        .expect("ReopenContainerLog");
    assert!(Path::new(&st.log_path).exists(), "a new log file");

    // SIGTERM first: the container's trap ends it well before the timeout.
    let asked = std::time::Instant::now();
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: svc.clone(),
            timeout: 60,
        })
        .await
        .expect("StopContainer");
    assert!(
        asked.elapsed() < Duration::from_secs(30),
        "stopped by SIGTERM"
    );
    let st = status(&mut c, &svc).await;
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{st:?}"
    );
    let log = std::fs::read_to_string(&st.log_path).unwrap();
    assert!(log.contains(" stdout F bye\n"), "after the rotation: {log}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        !old.contains("bye"),
        "nothing after the rotation in the old file"
    );
    let e = c
        .runtime
        .reopen_container_log(ReopenContainerLogRequest {
            container_id: svc.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    // Idempotent: stopping again, removing twice, removing an unknown id.
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: svc.clone(),
            timeout: 1,
        })
        .await
        .expect("stop again");
    for _ in 0..2 {
        c.runtime
            .remove_container(RemoveContainerRequest {
                container_id: svc.clone(),
            })
            .await
            .expect("RemoveContainer");
    }
    let gone = c
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: svc.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Events arrived in order for the job container.
    let mut seen = Vec::new();
    while let Ok(Some(Ok(e))) = tokio::time::timeout(Duration::from_secs(2), events.next()).await {
        if e.container_id == job_id {
            seen.push(e.container_event_type);
        }
    }
    assert_eq!(
        seen,
        [
            ContainerEventType::ContainerCreatedEvent as i32,
            ContainerEventType::ContainerStartedEvent as i32,
            ContainerEventType::ContainerStoppedEvent as i32
        ]
    );

    remove_pod(&mut c, &pod).await;
    remove_pod(&mut c, &pod).await; // idempotent
    d.assert_clean();
    let images = c
        .images
        .list_images(ListImagesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .images;
    assert!(images
        .iter()
        .any(|i| i.repo_tags.iter().any(|t| t == TEST_IMAGE)));
}

fn chrono_like(ts: &str) -> bool {
    ts.len() >= 20 && ts.as_bytes()[4] == b'-' && ts.contains('T') && ts.ends_with('Z')
}

/// Bad requests get the right code and a message naming the problem; nothing is left.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests() {
    let d = Cocoond::start("[runtime_handlers.big]\nmemory_mib = 384\nvcpus = 2\n").await;
    let mut c = d.client().await;
    let logs = d.log_dir("bad");
    let run = |cfg: Option<PodSandboxConfig>| RunPodSandboxRequest {
        config: cfg,
        runtime_handler: String::new(),
    };

    let e = c.runtime.run_pod_sandbox(run(None)).await.unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "config: is missing")
    );
    let mut cfg = pod_config("bad", &logs);
    cfg.metadata.as_mut().unwrap().name.clear();
    let e = c.runtime.run_pod_sandbox(run(Some(cfg))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("config.metadata.name"), "{e:?}");
    let mut cfg = pod_config("bad", &logs);
    cfg.linux
        .as_mut()
        .unwrap()
        .security_context
        .as_mut()
        .unwrap()
        .namespace_options
        .as_mut()
        .unwrap()
        .network = NamespaceMode::Node as i32;
    let e = c.runtime.run_pod_sandbox(run(Some(cfg))).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("host's network namespace"), "{e:?}");
    let e = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config("bad", &logs)),
            runtime_handler: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("runtime_handler"), "{e:?}");

    for id in ["", "0123456789abcdef"] {
        let e = c
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            if id.is_empty() {
                Code::InvalidArgument
            } else {
                Code::NotFound
            },
            "{e:?}"
        );
        let e = c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_err();
        assert_eq!(
            e.code(),
            if id.is_empty() {
                Code::InvalidArgument
            } else {
                Code::NotFound
            },
            "{e:?}"
        );
    }
    // Stop and remove of unknown ids succeed (kubelet retries them).
    c.runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: "feed".into(),
        })
        .await
        .expect("stop unknown pod");
    c.runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: "feed".into(),
        })
        .await
        .expect("remove unknown pod");
    c.runtime
        .remove_container(RemoveContainerRequest {
            container_id: "feed".into(),
        })
        .await
        .expect("remove unknown container");

    for bad in ["UPPER/Case:x", "a b", "registry.invalid/x@sha256:nothex"] {
        let e = c
            .images
            .pull_image(PullImageRequest {
                image: Some(ImageSpec {
                    image: bad.into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains(bad), "{e:?}");
    }
    let e = c
        .images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: "127.0.0.1:9/nothing:1".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(e.message().contains("127.0.0.1:9"), "{e:?}");

    // An oversized request is refused before it is decoded.
    let huge = PodSandboxConfig {
        hostname: "x".repeat(40 << 20),
        ..pod_config("huge", &logs)
    };
    let e = c
        .runtime
        .run_pod_sandbox(run(Some(huge)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.code(),
            Code::ResourceExhausted | Code::OutOfRange | Code::Unknown | Code::Internal
        ),
        "{e:?}"
    );

    // A pod for container-level checks.
    // This pod runs on the "big" handler's VM profile.
    let cfg = pod_config("good", &logs);
    let pod = c
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: "big".into(),
        })
        .await
        .expect("RunPodSandbox on a handler")
        .into_inner()
        .pod_sandbox_id;
    let st = c
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(st.status.unwrap().runtime_handler, "big");
    let info: serde_json::Value = serde_json::from_str(&st.info["info"]).unwrap();
    assert_eq!(
        (info["memoryMiB"].as_u64(), info["vcpus"].as_u64()),
        (Some(384), Some(2)),
        "{info}"
    );
    let e = c
        .runtime
        .run_pod_sandbox(run(Some(cfg.clone())))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let create = |config: ContainerConfig| CreateContainerRequest {
        pod_sandbox_id: pod.clone(),
        config: Some(config),
        sandbox_config: Some(cfg.clone()),
    };
    let e = c
        .runtime
        .create_container(create(container_config("x", "never/pulled:1", &["true"])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let mut no_meta = container_config("x", TEST_IMAGE, &["true"]);
    no_meta.metadata = None;
    let e = c
        .runtime
        .create_container(create(no_meta))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "config.metadata: is missing")
    );
    let mut bad_mount = container_config("x", TEST_IMAGE, &["true"]);
    bad_mount.mounts.push(Mount {
        container_path: "/d".into(),
        host_path: "/no/such/dir".into(),
        ..Default::default()
    });
    let e = c
        .runtime
        .create_container(create(bad_mount))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("config.mounts[0].host_path"), "{e:?}");
    let mut escape = container_config("x", TEST_IMAGE, &["true"]);
    escape.log_path = "../../x.log".into();
    let e = c
        .runtime
        .create_container(create(escape))
        .await
        .unwrap_err();
    assert!(e.message().contains("config.log_path"), "{e:?}");
    c.runtime
        .create_container(create(container_config("x", TEST_IMAGE, &["true"])))
        .await
        .expect("create");
    let e = c
        .runtime
        .create_container(create(container_config("x", TEST_IMAGE, &["true"])))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    // The image is in use: RemoveImage refuses.
    let e = c
        .images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: TEST_IMAGE.into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    remove_pod(&mut c, &pod).await;
    d.assert_clean();
}

/// kill -9 of cocoond: a restarted daemon lists the same pod and container, re-attaches
/// to the VM and keeps serving ExecSync, logs and stop.
#[tokio::test(flavor = "multi_thread")]
async fn restart_recovery() {
    let mut d = Cocoond::start("").await;
    let mut c = d.client().await;
    let logs = d.log_dir("restart");
    let cfg = pod_config("restart", &logs);
    let pod = run_pod(&mut c, cfg.clone()).await;
    let ctr = start_container(
        &mut c,
        &pod,
        &cfg,
        container_config(
            "ticker",
            TEST_IMAGE,
            &[
                "sh",
                "-c",
                "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
            ],
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.kill9();
    assert!(!d.vm_processes().is_empty(), "the VM outlives the daemon");
    d.spawn().await;
    let mut c = d.client().await;
    let pods = c
        .runtime
        .list_pod_sandbox(ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(pods.len(), 1);
    assert_eq!(
        (pods[0].id.as_str(), pods[0].state),
        (pod.as_str(), PodSandboxState::SandboxReady as i32)
    );
    let st = status(&mut c, &ctr).await;
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    let out = c
        .runtime
        .exec_sync(ExecSyncRequest {
            container_id: ctr.clone(),
            cmd: vec!["echo".into(), "still here".into()],
            timeout: 30,
        })
        .await
        .expect("ExecSync after restart")
        .into_inner();
    assert_eq!(out.stdout, b"still here\n");
    let before = std::fs::read_to_string(&st.log_path)
        .unwrap()
        .lines()
        .count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = std::fs::read_to_string(&st.log_path)
        .unwrap()
        .lines()
        .count();
    assert!(
        after > before,
        "the log keeps growing after the restart ({before} → {after})"
    );
    c.runtime
        .stop_container(StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 5,
        })
        .await
        .expect("stop");
    assert_eq!(
        status(&mut c, &ctr).await.state,
        ContainerState::ContainerExited as i32
    );
    remove_pod(&mut c, &pod).await;
    d.assert_clean();
}

/// 20 create/start/stop/remove cycles of a pod with two containers leave nothing:
/// no VM process, mount, socket, directory or image reference.
#[tokio::test(flavor = "multi_thread")]
async fn twenty_cycles_leave_nothing() {
    let d = Cocoond::start("").await;
    let mut c = d.client().await;
    let logs = d.log_dir("cycles");
    for i in 0..20 {
        let mut cfg = pod_config("cycle", &logs);
        cfg.metadata.as_mut().unwrap().attempt = i;
        let pod = run_pod(&mut c, cfg.clone()).await;
        let a = start_container(
            &mut c,
            &pod,
            &cfg,
            container_config("a", TEST_IMAGE, &["sleep", "1000"]),
        )
        .await;
        let b = start_container(
            &mut c,
            &pod,
            &cfg,
            container_config("b", TEST_IMAGE, &["sh", "-c", "echo b"]),
        )
        .await;
        c.runtime
            .stop_container(StopContainerRequest {
                container_id: a.clone(),
                timeout: 1,
            })
            .await
            .expect("stop a");
        wait_exited(&mut c, &b, EXIT_WAIT).await;
        for id in [&a, &b] {
            c.runtime
                .remove_container(RemoveContainerRequest {
                    container_id: id.to_string(),
                })
                .await
                .expect("remove");
        }
        remove_pod(&mut c, &pod).await;
    }
    d.assert_clean();
    // No image reference is left: the test image can be removed.
    c.images
        .remove_image(RemoveImageRequest {
            image: Some(ImageSpec {
                image: TEST_IMAGE.into(),
                ..Default::default()
            }),
        })
        .await
        .expect("RemoveImage once no container uses it");
}

/// A VM that dies under a running pod (its VMM killed: QEMU, or cocoon-vmm with
/// `COCOON_TEST_BACKEND=builtin`) makes the pod NotReady with the
/// reason and its container exited; removing the pod then leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn vm_death_marks_the_pod_not_ready() {
    let d = Cocoond::start("").await;
    let mut c = d.client().await;
    let logs = d.log_dir("doomed");
    let cfg = pod_config("doomed", &logs);
    let pod = run_pod(&mut c, cfg.clone()).await;
    let ctr = start_container(
        &mut c,
        &pod,
        &cfg,
        container_config("s", TEST_IMAGE, &["sleep", "1000"]),
    )
    .await;
    let qemu: Vec<u32> = d
        .vm_processes()
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("qemu-system") || cmd.contains("cocoon-vmm"))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(qemu.len(), 1, "{:?}", d.vm_processes());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        let s = c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner();
        if s.status.as_ref().unwrap().state == PodSandboxState::SandboxNotready as i32 {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "pod still ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.info["info"].contains("VM ended"),
        "{:?}",
        status.info
    );
    let st = wait_exited(&mut c, &ctr, Duration::from_secs(30)).await;
    assert_eq!(st.reason, "Unknown", "{st:?}");
    remove_pod(&mut c, &pod).await;
    d.assert_clean();
}
