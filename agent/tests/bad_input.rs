//! Bad requests get a clear error naming the field, and leave nothing half-created.

mod common;

use cocoon_proto::agent::v1::*;
use common::pod::*;
use common::Agent;
use tonic::Code;

fn expect(err: tonic::Status, code: Code, mentions: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert!(
        err.message().contains(mentions),
        "{:?} should mention {mentions:?}",
        err.message()
    );
}

#[tokio::test]
async fn bad_input_is_refused_and_leaves_nothing() {
    let agent = Agent::start();
    let rootfs = busybox_rootfs(agent.dir.path());
    let mut c = Client::new(agent.channel().await);
    let root = agent.dir.path();
    let sbx = |id: &str| sandbox_request(id, &[root], &[]);

    // Sandboxes.
    c.create_sandbox(sbx("pod")).await.unwrap();
    expect(
        c.create_sandbox(sbx("pod")).await.unwrap_err(),
        Code::AlreadyExists,
        "pod",
    );
    expect(
        c.create_sandbox(sbx("../x")).await.unwrap_err(),
        Code::InvalidArgument,
        "sandbox_id",
    );
    let mut r = sbx("s2");
    r.storage_roots = vec!["relative/dir".into()];
    expect(
        c.create_sandbox(r).await.unwrap_err(),
        Code::InvalidArgument,
        "storage_roots[0]",
    );
    let mut r = sbx("s3");
    r.sysctls.insert("vm.swappiness".into(), "1".into());
    expect(
        c.create_sandbox(r).await.unwrap_err(),
        Code::InvalidArgument,
        "sysctls[vm.swappiness]",
    );
    expect(
        c.destroy_sandbox(DestroySandboxRequest {
            sandbox_id: "nope".into(),
        })
        .await
        .unwrap_err(),
        Code::NotFound,
        "nope",
    );

    // Containers.
    let good = || container_request("pod", "c", &rootfs, spec(&["true"], false, no_limits()));
    let mut r = good();
    r.oci_spec_json = "{ not json".into();
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "oci_spec_json",
    );
    let mut r = good();
    r.oci_spec_json = spec(&[], false, no_limits());
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "oci_spec_json.process.args",
    );
    let mut r = good();
    r.sandbox_id = "nope".into();
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::NotFound,
        "sandbox \"nope\"",
    );
    let mut r = good();
    r.rootfs = "rootfs".into();
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "rootfs",
    );
    let mut r = good();
    r.rootfs = format!("{}/../../etc", rootfs.display());
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "rootfs",
    );
    std::os::unix::fs::symlink("/", root.join("escape")).unwrap();
    let mut r = good();
    r.rootfs = root.join("escape").to_string_lossy().into_owned();
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "outside the pod's storage roots",
    );
    let mut r = good();
    r.mounts = vec![Mount {
        destination: "/host-etc".into(),
        r#type: "bind".into(),
        source: "/etc".into(),
        options: vec!["rbind".into()],
    }];
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "mounts[0].source",
    );
    let mut r = good();
    r.mounts = vec![Mount {
        destination: "/disk".into(),
        r#type: "ext4".into(),
        source: "/dev/vda".into(),
        options: vec![],
    }];
    expect(
        c.create_container(r).await.unwrap_err(),
        Code::InvalidArgument,
        "mounts[0].type",
    );
    // A command that does not exist: libcontainer fails, and cleans up after itself.
    let mut r = good();
    r.oci_spec_json = spec(&["/no/such/binary"], false, no_limits());
    let created = c.create_container(r).await;
    if created.is_ok() {
        // libcontainer may find out only at start.
        let started = c
            .start_container(StartContainerRequest {
                container_id: "c".into(),
            })
            .await;
        let _ = started;
        c.remove_container(RemoveContainerRequest {
            container_id: "c".into(),
            force: true,
        })
        .await
        .unwrap();
    }

    // Unknown ids and wrong states.
    expect(
        c.start_container(StartContainerRequest {
            container_id: "nope".into(),
        })
        .await
        .unwrap_err(),
        Code::NotFound,
        "nope",
    );
    c.create_container(good()).await.unwrap();
    expect(
        c.create_container(good()).await.unwrap_err(),
        Code::AlreadyExists,
        "container \"c\"",
    );
    let exec_req = ExecProcessRequest {
        container_id: "c".into(),
        exec_id: "e".into(),
        process: Some(Process {
            args: vec!["true".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    expect(
        c.exec_process(exec_req.clone()).await.unwrap_err(),
        Code::FailedPrecondition,
        "not Running",
    );
    expect(
        c.remove_container(RemoveContainerRequest {
            container_id: "c".into(),
            force: false,
        })
        .await
        .unwrap_err(),
        Code::FailedPrecondition,
        "force",
    );
    expect(
        c.signal_process(SignalProcessRequest {
            container_id: "c".into(),
            exec_id: String::new(),
            signal: 99,
        })
        .await
        .unwrap_err(),
        Code::InvalidArgument,
        "signal",
    );
    expect(
        c.update_container(UpdateContainerRequest {
            container_id: "c".into(),
            resources_json: "[".into(),
        })
        .await
        .unwrap_err(),
        Code::InvalidArgument,
        "resources_json",
    );
    expect(
        c.wait_process(WaitProcessRequest {
            container_id: "c".into(),
            exec_id: "nope".into(),
            forget: false,
        })
        .await
        .unwrap_err(),
        Code::NotFound,
        "exec \"nope\"",
    );
    c.remove_container(RemoveContainerRequest {
        container_id: "c".into(),
        force: true,
    })
    .await
    .unwrap();

    // Nothing of the refused requests is left: only the pod's own files.
    let pod_dir = agent.view(&agent.state_dir.join("sandboxes/pod/containers"));
    let left: Vec<_> = std::fs::read_dir(&pod_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "container dirs left: {left:?}");
    let lc = agent.view(&agent.state_dir.join("libcontainer"));
    let left: Vec<_> = std::fs::read_dir(&lc)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "libcontainer state left: {left:?}");
    let sandboxes: Vec<_> = std::fs::read_dir(agent.view(&agent.state_dir.join("sandboxes")))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(sandboxes, vec!["pod".to_string()]);
    let cgroups = std::path::Path::new("/sys/fs/cgroup/unified");
    for id in ["s2", "s3"] {
        assert!(!cgroups
            .join(format!("cocoon-test-{}-{id}", std::process::id()))
            .exists());
    }
    let pod_cgroup = cgroups.join(format!("cocoon-test-{}-pod", std::process::id()));
    let subs: Vec<_> = std::fs::read_dir(&pod_cgroup)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .collect();
    assert!(subs.is_empty(), "container cgroups left: {subs:?}");
    c.destroy_sandbox(DestroySandboxRequest {
        sandbox_id: "pod".into(),
    })
    .await
    .unwrap();
    assert!(!pod_cgroup.exists());
}
