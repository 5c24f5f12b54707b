//! A loopback OCI registry and image builders, for tests that pull images.
//!
//! - [`TestRegistry::start`] runs Debian's `docker-registry` (distribution v2.8) on a
//!   free `127.0.0.1` port, plain HTTP, no auth, storage in its own temp dir; it is
//!   killed when dropped.
//! - [`build_busybox_image`] builds an OCI image layout with `umoci`: the host's static
//!   `/bin/busybox` with applet symlinks, extra files, and a second layer of deletions
//!   (whiteouts). [`add_raw_layer`] appends a hand-made tar layer (opaque directories,
//!   odd entries).
//! - [`TestRegistry::push`] copies a layout into the registry with `skopeo`, gzip or
//!   zstd, OCI or Docker v2 schema 2 manifests; [`TestRegistry::push_index`] tags a
//!   multi-platform index of pushed manifests.
//!
//! `scripts/setup.sh` installs docker-registry, umoci, skopeo and busybox-static.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY_BIN: &str = "docker-registry";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A `docker-registry` serving plain HTTP on `127.0.0.1:<port>`; killed on drop.
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    /// `user:password` when the registry requires basic auth.
    creds: Option<String>,
}

/// The password of [`TestRegistry::start_with_auth`]'s user, and its bcrypt hash (what
/// the registry's htpasswd file holds; fixed, so no bcrypt tool is needed).
pub const AUTH_PASSWORD: &str = "secret";
const AUTH_PASSWORD_BCRYPT: &str = "$2b$12$AUOH24QYjQF4it3uMxElVeP1pG8LYe9zG5fE/BzokT.KOKQ6OoGCy";

/// Layer compression for [`TestRegistry::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// How [`TestRegistry::push_with`] writes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOptions {
    pub compression: Compression,
    /// Docker v2 schema 2 media types instead of OCI ones (gzip only: Docker has no
    /// zstd layers).
    pub docker_v2s2: bool,
}

/// A platform entry for [`TestRegistry::push_index`].
#[derive(Debug, Clone)]
pub struct IndexEntry {
    /// A manifest digest in the same repository, as [`TestRegistry::push`] returns.
    pub digest: String,
    pub os: String,
    pub architecture: String,
}

impl TestRegistry {
    /// Starts a registry and waits until `GET /v2/` answers. Panics, with the
    /// registry's log, if it does not come up.
    pub fn start() -> TestRegistry {
        Self::start_inner(None)
    }

    /// A registry that answers only requests with basic auth as `user` /
    /// [`AUTH_PASSWORD`] (htpasswd). Pushes use those credentials.
    pub fn start_with_auth(user: &str) -> TestRegistry {
        Self::start_inner(Some(user))
    }

    fn start_inner(user: Option<&str>) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("cocoon-registry-")
            .tempdir()
            .expect("create registry dir");
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir(&storage).expect("create registry storage");
        let config = dir.path().join("config.yml");
        let mut text = format!(
            "version: 0.1\n\
             log:\n  level: info\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.display()
        );
        if let Some(user) = user {
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{AUTH_PASSWORD_BCRYPT}\n"))
                .expect("write htpasswd");
            text.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: cocoon-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        std::fs::write(&config, text).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("create log");
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {REGISTRY_BIN} (scripts/setup.sh installs it): {e}"));
        let creds = user.map(|u| format!("{u}:{AUTH_PASSWORD}"));
        let mut registry = TestRegistry {
            child,
            dir,
            port,
            creds,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.http("GET", "/v2/", &[], b"") {
                Ok((200, _)) => return,
                Ok((401, _)) if self.creds.is_some() => return,
                _ => {}
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{REGISTRY_BIN} exited ({status}):\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!(
                    "{REGISTRY_BIN} not ready in {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `127.0.0.1:<port>`: the registry host of image references, and the key of its
    /// entry in a `RegistriesConfig`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>`, for use as a mirror.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's filesystem storage root.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the content of blob `digest` (`sha256:<hex>`); corrupt
    /// it to test digest verification.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The registry's log so far (access log lines included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many requests the access log shows for `method` on a path containing
    /// `path_part`.
    pub fn requests(&self, method: &str, path_part: &str) -> usize {
        let needle = format!("\"{method} ");
        self.log()
            .lines()
            .filter(|l| l.contains(&needle) && l.contains(path_part) && !l.contains("level="))
            .count()
    }

    /// Copies the image `tag` of the OCI layout at `layout` to `<addr>/<name>:<tag>`
    /// with OCI manifests; returns the manifest digest.
    pub fn push(&self, layout: &Path, tag: &str, name: &str, compression: Compression) -> String {
        self.push_with(
            layout,
            tag,
            name,
            PushOptions {
                compression,
                docker_v2s2: false,
            },
        )
    }

    /// [`push`](Self::push) with options.
    pub fn push_with(&self, layout: &Path, tag: &str, name: &str, opts: PushOptions) -> String {
        let digest_file = tempfile::NamedTempFile::new_in(self.dir.path())
            .expect("create a digest file")
            .into_temp_path();
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--insecure-policy",
            "--dest-tls-verify=false",
        ])
        .arg("--digestfile")
        .arg(&*digest_file);
        match opts.compression {
            Compression::Gzip => cmd.args(["--dest-compress-format", "gzip"]),
            Compression::Zstd => cmd.args(["--dest-compress-format", "zstd"]),
        };
        if opts.docker_v2s2 {
            cmd.args(["--format", "v2s2"]);
        } else {
            cmd.args(["--format", "oci"]);
        }
        if let Some(creds) = &self.creds {
            cmd.args(["--dest-creds", creds]);
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{name}:{tag}", self.addr()));
        run(&mut cmd);
        let digest = std::fs::read_to_string(&digest_file).expect("read skopeo's digest file");
        digest.trim().to_owned()
    }

    /// Tags `<name>:<tag>` as an OCI image index of `entries` (manifests already pushed
    /// to `name`); returns the index digest.
    pub fn push_index(&self, name: &str, tag: &str, entries: &[IndexEntry]) -> String {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let (status, body) = self
                    .http(
                        "GET",
                        &format!("/v2/{name}/manifests/{}", e.digest),
                        &[(
                            "Accept",
                            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
                        )],
                        b"",
                    )
                    .expect("fetch a manifest");
                assert_eq!(status, 200, "manifest {} of {name}", e.digest);
                let media_type = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
                serde_json::json!({
                    "mediaType": media_type,
                    "digest": e.digest,
                    "size": body.len(),
                    "platform": { "os": e.os, "architecture": e.architecture },
                })
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .expect("serialize index");
        let (status, body) = self
            .http(
                "PUT",
                &format!("/v2/{name}/manifests/{tag}"),
                &[("Content-Type", "application/vnd.oci.image.index.v1+json")],
                &index,
            )
            .expect("put the index");
        assert_eq!(status, 201, "PUT index: {}", String::from_utf8_lossy(&body));
        sha256_hex_digest(&index)
    }

    /// One HTTP/1.0 request to the registry: `(status, body)`.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr(),
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let head = String::from_utf8_lossy(&resp[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
        Ok((status, resp[split + 4..].to_vec()))
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port on 127.0.0.1 nothing listens on (at the time of the call).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

/// Busybox applets linked in the images [`build_busybox_image`] makes.
pub const APPLETS: &[&str] = &["sh", "echo", "cat", "ls", "sleep", "true"];

/// Builds (or adds to) the OCI layout at `layout` an image tagged `tag`: a first
/// layer with `/bin/busybox` (the host's static one), `/bin/<applet>` symlinks for
/// [`APPLETS`], `/etc`, `/tmp`, `/proc`, `/sys`, `/dev` and the `extra` files (path in
/// the image, contents); a second layer, when `deletions` is not empty, removing those
/// paths (whiteouts). Cmd is `["/bin/sh"]`.
pub fn build_busybox_image(layout: &Path, tag: &str, extra: &[(&str, &[u8])], deletions: &[&str]) {
    if !layout.join("oci-layout").exists() {
        run(Command::new("umoci").args(["init", "--layout"]).arg(layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    let work = tempfile::tempdir().expect("create bundle dir");
    let bundle = work.path().join("bundle");
    unpack(&image, &bundle);
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).expect("create image dir");
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copy /bin/busybox (busybox-static; scripts/setup.sh installs it)");
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
            .expect("link an applet");
    }
    for (path, contents) in extra {
        let p = rootfs.join(path.trim_start_matches('/'));
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("create parent of an extra file");
        }
        std::fs::write(&p, contents).expect("write an extra file");
    }
    repack(&image, &bundle);
    run(Command::new("umoci").args(["config", "--image", &image, "--config.cmd", "/bin/sh"]));
    if !deletions.is_empty() {
        let bundle2 = work.path().join("bundle2");
        unpack(&image, &bundle2);
        for path in deletions {
            let p = bundle2.join("rootfs").join(path.trim_start_matches('/'));
            let md = std::fs::symlink_metadata(&p)
                .unwrap_or_else(|e| panic!("delete {path}: not in the image: {e}"));
            if md.is_dir() {
                std::fs::remove_dir_all(&p).expect("delete a dir");
            } else {
                std::fs::remove_file(&p).expect("delete a file");
            }
        }
        repack(&image, &bundle2);
    }
}

/// Appends `tar` (an uncompressed tar archive, entries written verbatim: `.wh.`
/// whiteouts and `.wh..wh..opq` opaque markers included) as a new layer of image `tag`
/// of the layout.
pub fn add_raw_layer(layout: &Path, tag: &str, tar: &[u8]) {
    let work = tempfile::tempdir().expect("create work dir");
    let file = work.path().join("layer.tar");
    std::fs::write(&file, tar).expect("write layer tar");
    run(Command::new("umoci")
        .args(["raw", "add-layer", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&file));
}

fn rootless() -> Vec<&'static str> {
    if nix::unistd::geteuid().is_root() {
        vec![]
    } else {
        vec!["--rootless"]
    }
}

fn unpack(image: &str, bundle: &Path) {
    run(Command::new("umoci")
        .arg("unpack")
        .args(rootless())
        .args(["--image", image])
        .arg(bundle));
}

fn repack(image: &str, bundle: &Path) {
    run(Command::new("umoci")
        .arg("repack")
        .args(["--image", image])
        .arg(bundle));
}

/// Runs `cmd`, panicking with its output if it fails.
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256_hex_digest(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{:x}", sha2::Sha256::digest(data))
}
