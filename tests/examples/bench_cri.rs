//! cocoond benchmark: RunPodSandbox → ready and CreateContainer + StartContainer
//! latencies through the CRI (median and p95), with RunPodSandbox's breakdown from the
//! daemon, beside a bare boot of the same kernel + initrd (PodVm::boot, no shared fs, no
//! daemon), interleaved in one run; then PullImage + unpack throughput of a 64 MiB-layer
//! image from a registry on 127.0.0.1 (removed between pulls, so each pull downloads,
//! verifies and unpacks everything). Run through `scripts/bench-cri.sh [runs]`.

use cocoon_runtime::config::TEST_IMAGE;
use cocoon_runtime::pod_vm::PodVm;
use cocoon_tests::cri::*;
use cocoon_tests::registry::{build_busybox_image, Compression, TestRegistry};
use cocoon_tests::{scratch, validate, vm_config, READY_TIMEOUT};
use k8s_cri::v1::*;
use std::time::{Duration, Instant};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median_p95(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.95))
}

#[tokio::main]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let reg = TestRegistry::start();
    let d = Cocoond::start(&format!(
        "[registries.hosts.\"{}\"]\nplain_http = true\n",
        reg.addr()
    ))
    .await;
    let mut c = d.client().await;
    let logs = d.log_dir("bench");
    let dir = scratch();
    let (mut bare, mut run_pod_ms, mut create, mut start) = (vec![], vec![], vec![], vec![]);
    let mut parts: Vec<[f64; 5]> = vec![];
    for i in 0..runs {
        // A bare boot of the same guest image.
        let mut cfg = vm_config(dir.path(), &format!("bare{i}"));
        cfg.memory_mib = 256;
        let t = Instant::now();
        let (vm, _, _) = PodVm::boot(&validate(&cfg), READY_TIMEOUT)
            .await
            .expect("bare boot");
        bare.push(ms(t.elapsed()));
        vm.shutdown(Duration::from_secs(10)).await;

        // The same through cocoond.
        let mut pc = pod_config("bench", &logs);
        pc.metadata.as_mut().unwrap().attempt = i as u32;
        let t = Instant::now();
        let pod = run_pod(&mut c, pc.clone()).await;
        run_pod_ms.push(ms(t.elapsed()));
        let st = c
            .runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner();
        let info: serde_json::Value = serde_json::from_str(&st.info["info"]).expect("verbose info");
        let s = &info["startupMs"];
        let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
        parts.push([
            f("vmm_start"),
            f("kernel_boot"),
            f("agent_init"),
            f("handshake"),
            f("create_sandbox"),
        ]);
        let t = Instant::now();
        let id = c
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config("c", TEST_IMAGE, &["sleep", "1000"])),
                sandbox_config: Some(pc.clone()),
            })
            .await
            .expect("create")
            .into_inner()
            .container_id;
        create.push(ms(t.elapsed()));
        let t = Instant::now();
        c.runtime
            .start_container(StartContainerRequest { container_id: id })
            .await
            .expect("start");
        start.push(ms(t.elapsed()));
        remove_pod(&mut c, &pod).await;
    }
    let (bm, bp) = median_p95(&mut bare);
    let (rm, rp) = median_p95(&mut run_pod_ms);
    let (cm, cp) = median_p95(&mut create);
    let (sm, sp) = median_p95(&mut start);
    println!("runs: {runs} (interleaved)");
    println!("bare boot → agent ready        median {bm:7.1} ms  p95 {bp:7.1} ms");
    println!(
        "RunPodSandbox → ready          median {rm:7.1} ms  p95 {rp:7.1} ms   ({:.2}× bare)",
        rm / bm
    );
    let names = [
        "VMM start",
        "kernel boot",
        "agent init",
        "handshake",
        "CreateSandbox (incl. virtio-fs mount)",
    ];
    for (k, name) in names.iter().enumerate() {
        let mut v: Vec<f64> = parts.iter().map(|p| p[k]).collect();
        let (m, _) = median_p95(&mut v);
        println!("  {name:<38} median {m:7.1} ms");
    }
    println!("CreateContainer                median {cm:7.1} ms  p95 {cp:7.1} ms");
    println!("StartContainer                 median {sm:7.1} ms  p95 {sp:7.1} ms");
    println!("Create + Start                 median {:7.1} ms", cm + sm);

    pull_throughput(&mut c, &reg, runs).await;
}

/// A 64 MiB layer of incompressible bytes (xorshift), gzip-compressed by the push.
async fn pull_throughput(
    c: &mut cocoon_runtime::cri_client::CriClient,
    reg: &TestRegistry,
    runs: usize,
) {
    const SIZE: usize = 64 << 20;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..SIZE / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let tmp = tempfile::tempdir().expect("tmp");
    let layout = tmp.path().join("layout");
    build_busybox_image(&layout, "big", &[("/blob", &data)], &[]);
    reg.push(&layout, "big", "bench/big", Compression::Gzip);
    let name = format!("{}/bench/big:big", reg.addr());
    let spec = || {
        Some(ImageSpec {
            image: name.clone(),
            ..Default::default()
        })
    };
    let mut rates = Vec::new();
    let mut size = 0;
    for _ in 0..runs {
        let t = Instant::now();
        c.images
            .pull_image(PullImageRequest {
                image: spec(),
                ..Default::default()
            })
            .await
            .expect("pull");
        let took = t.elapsed();
        let img = c
            .images
            .image_status(ImageStatusRequest {
                image: spec(),
                verbose: false,
            })
            .await
            .expect("status")
            .into_inner()
            .image
            .expect("image");
        size = img.size;
        rates.push(img.size as f64 / 1e6 / took.as_secs_f64());
        c.images
            .remove_image(RemoveImageRequest { image: spec() })
            .await
            .expect("remove");
    }
    let (m, _) = median_p95(&mut rates);
    let (lo, hi) = (rates[0], rates[rates.len() - 1]);
    println!("PullImage + verify + unpack, {:.1} MB compressed: median {m:.1} MB/s (min {lo:.1}, max {hi:.1})", size as f64 / 1e6);
}
