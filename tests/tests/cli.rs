//! The `cocoon` CLI refuses bad configuration before starting anything.

use cocoon_tests::{bin_dir, guest_image, processes_mentioning, scratch};
use std::process::Command;

fn cocoon(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join("cocoon"))
        .args(args)
        .output()
        .expect("run cocoon (cargo build --bins first)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_named_and_nothing_starts() {
    let image = guest_image();
    let dir = scratch();
    let run_dir = dir.path().join("vm");
    let run = run_dir.to_str().unwrap();
    let kernel = image.kernel.to_str().unwrap();
    let initrd = image.initrd.to_str().unwrap();

    let cases: [(&[&str], &str); 4] = [
        (
            &["--kernel", "/nonexistent/vmlinux"],
            "kernel: /nonexistent/vmlinux",
        ),
        (&["--initrd", "/"], "initrd: / is not a regular file"),
        (&["--memory-mib", "9000000"], "memory_mib: 9000000 MiB"),
        (&["--vcpus", "0"], "vcpus: 0"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["vm", "boot", "--run-dir", run];
        if !extra.contains(&"--kernel") {
            args.extend(["--kernel", kernel]);
        }
        if !extra.contains(&"--initrd") {
            args.extend(["--initrd", initrd]);
        }
        args.extend(extra);
        let (ok, stderr) = cocoon(&args);
        assert!(!ok, "{extra:?} was accepted");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert!(!run_dir.exists(), "{extra:?} created the run dir");
        assert!(processes_mentioning(&run_dir).is_empty());
    }
}

#[test]
fn missing_image_dir_says_what_is_missing() {
    let (ok, stderr) = cocoon(&["vm", "boot", "--image-dir", "/nonexistent"]);
    assert!(!ok);
    assert!(
        stderr.contains("no vmlinux + initramfs.img in /nonexistent"),
        "{stderr}"
    );
}

#[test]
fn run_streams_the_containers_output_and_exit_code() {
    let dir = scratch();
    let run_dir = dir.path().join("vm");
    let out = Command::new(bin_dir().join("cocoon"))
        .args([
            "vm",
            "run",
            "--run-dir",
            run_dir.to_str().unwrap(),
            "--ready-timeout-secs",
            "120",
        ])
        .args([
            "--",
            "sh",
            "-c",
            "echo out-$(hostname); echo err >&2; exit 3",
        ])
        .output()
        .expect("run cocoon");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr: {stderr}");
    assert_eq!(stdout, "out-cocoon-demo\n");
    assert!(stderr.contains("err\n"), "{stderr}");
    assert!(
        stderr.contains("container exited: error (code 3)"),
        "{stderr}"
    );
    assert!(stderr.contains("guest shut down"), "{stderr}");
    assert!(processes_mentioning(&run_dir).is_empty());
    assert!(!run_dir.exists());
}
