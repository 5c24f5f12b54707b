//! The `cocoon` CLI against a real cocoond: run (exit code and streams), detached run,
//! ps, exec, logs, images, rm — and nothing left afterwards.

use cocoon_runtime::config::TEST_IMAGE;
use cocoon_tests::bin_dir;
use cocoon_tests::cri::Cocoond;
use std::path::Path;
use std::process::{Command, Output};

fn cocoon(socket: &Path, args: &[&str]) -> Output {
    Command::new(bin_dir().join("cocoon"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("run cocoon (cargo build --bins first)")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn cocoon_cli_drives_cocoond() {
    let d = Cocoond::start("").await;
    let s = d.socket.clone();
    let run = tokio::task::spawn_blocking(move || {
        cocoon(
            &s,
            &[
                "run",
                "--rm",
                "--name",
                "once",
                TEST_IMAGE,
                "--",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 7",
            ],
        )
    });
    let out = run.await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}\n{}",
        text(&out.stderr),
        d.log()
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));

    let s = d.socket.clone();
    let out = tokio::task::spawn_blocking(move || {
        cocoon(
            &s,
            &[
                "run",
                "-d",
                "--name",
                "svc",
                TEST_IMAGE,
                "--",
                "sh",
                "-c",
                "echo started; sleep 1000",
            ],
        )
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "a container id: {id:?}");

    let out = cocoon(&d.socket, &["ps"]);
    assert!(
        text(&out.stdout).contains(&id[..12]),
        "{}",
        text(&out.stdout)
    );
    let out = cocoon(
        &d.socket,
        &["exec", "svc", "--", "sh", "-c", "echo hi; exit 4"],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(4), "hi\n".to_string())
    );
    let out = cocoon(&d.socket, &["logs", &id[..12]]);
    assert_eq!(text(&out.stdout), "started\n");
    let out = cocoon(&d.socket, &["images"]);
    assert!(
        text(&out.stdout).contains("localhost/cocoon/test"),
        "{}",
        text(&out.stdout)
    );
    let out = cocoon(&d.socket, &["exec", "nosuch", "--", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("cocoon: "),
        "{}",
        text(&out.stderr)
    );

    let s = d.socket.clone();
    let out = tokio::task::spawn_blocking(move || cocoon(&s, &["rm", "-f", "svc"]))
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&cocoon(&d.socket, &["ps", "-a", "-q"]).stdout)
        .trim()
        .is_empty());
    d.assert_clean();
}
