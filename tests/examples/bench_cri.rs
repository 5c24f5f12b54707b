//! cocoond benchmark: RunPodSandbox → ready and CreateContainer + StartContainer
//! latencies through the CRI (median and p95), with RunPodSandbox's breakdown from the
//! daemon, beside a bare boot of the same kernel + initrd (PodVm::boot, no shared fs, no
//! daemon), interleaved in one run. Run through `scripts/bench-cri.sh [runs]`.

use cocoon_runtime::config::TEST_IMAGE;
use cocoon_runtime::pod_vm::PodVm;
use cocoon_tests::cri::*;
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
    let d = Cocoond::start("").await;
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
}
