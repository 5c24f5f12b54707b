#!/usr/bin/env bash
# cocoon-vmm vs QEMU on this machine's KVM, side by side on the same tiny PVH payload.
#
#   scripts/bench-vmm.sh [RUNS]        (default 20 runs per VMM and measurement)
#
# The payload is a PVH ELF (built here with gcc + ld): entered in 32-bit protected mode,
# its first instruction writes '!' to COM1, then it writes to port 0x501, which ends the
# VM (cocoon-vmm --debug-exit; QEMU -device isa-debug-exit). Both VMMs get 1 vCPU and
# 128 MiB and put the serial port on their standard output. Measured from the host:
#   - first instruction: process spawn → the '!' read from the VMM's stdout pipe;
#   - payload finished:  process spawn → the VMM process has exited;
#   - over the control API (cocoon-vmm only): spawn → API socket ready, and spawn →
#     first instruction when the VM is configured and started with PUT /vm/config +
#     PUT /vm/start as soon as the socket answers (how the runtime's builtin backend
#     starts it);
#   - memory: a second payload that halts after the '!'; 300 ms later the VMM's RSS
#     and PSS (/proc/<pid>/smaps) minus the guest RAM mapping's (the largest anonymous
#     mapping of at least the guest's size) is the VMM's own footprint.
# The two VMMs alternate run by run; medians are reported, with the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-20}
MEM_MIB=128

command -v qemu-system-x86_64 >/dev/null || { echo "bench-vmm: needs qemu-system-x86_64" >&2; exit 1; }
command -v gcc >/dev/null && command -v ld >/dev/null || { echo "bench-vmm: needs gcc and ld (binutils)" >&2; exit 1; }
[ -w /dev/kvm ] || { echo "bench-vmm: needs a usable /dev/kvm" >&2; exit 1; }

cargo build --quiet --release -p cocoon-vmm
VMM=$PWD/target/release/cocoon-vmm

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/payload.S" <<'EOF'
    .section .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18              /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start                /* the 32-bit PVH entry point */

    .text
    .code32
    .globl _start
_start:
    mov $0x3f8, %dx             /* COM1: the host sees the first instruction */
    mov $'!', %al
    out %al, %dx
#ifdef HOLD
1:  cli                         /* stay alive, idle, to be measured */
    hlt
    jmp 1b
#else
    mov $0x501, %dx             /* debug exit: the payload is finished */
    mov $0x10, %al
    out %al, %dx
1:  hlt
    jmp 1b
#endif
EOF
cat > "$work/payload.ld" <<'EOF'
ENTRY(_start)
SECTIONS {
    . = 0x100000;
    .text : { *(.text) }
    .note : { *(.note.Xen) }
}
EOF
gcc -c "$work/payload.S" -o "$work/exit.o"
gcc -DHOLD -c "$work/payload.S" -o "$work/hold.o"
ld -m elf_x86_64 -T "$work/payload.ld" --build-id=none -o "$work/exit.elf" "$work/exit.o"
ld -m elf_x86_64 -T "$work/payload.ld" --build-id=none -o "$work/hold.elf" "$work/hold.o"

echo "bench-vmm: $RUNS runs each; $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); $(uname -r); $(qemu-system-x86_64 --version | head -1)" >&2
[ -e /sys/module/kvm_pvm ] && echo "bench-vmm: /dev/kvm is a nested paravirtual KVM (kvm_pvm)" >&2

python3 - "$RUNS" "$MEM_MIB" "$VMM" "$work" <<'EOF'
import json, os, re, socket, statistics, subprocess, sys, time

runs, mem_mib, vmm, work = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]

def cocoon(payload):
    return ([vmm, "--kernel", payload, "--memory-mib", str(mem_mib), "--vcpus", "1",
             "--debug-exit"], 0x10)

def qemu(payload):
    return (["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", "kvm", "-cpu", "host",
             "-m", f"{mem_mib}M", "-smp", "1", "-nodefaults", "-no-user-config",
             "-display", "none", "-serial", "stdio",
             "-device", "isa-debug-exit,iobase=0x501,iosize=1", "-kernel", payload],
            (0x10 << 1) | 1)

VMMS = {"cocoon-vmm": cocoon, "qemu": qemu}

def timed_run(cmd, want_rc):
    """(ms to the first serial byte, ms to process exit, cocoon-vmm's own first_exit_us)"""
    err = open(os.path.join(work, "stderr.log"), "w+")
    t0 = time.perf_counter_ns()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
    first = p.stdout.read(1)
    t1 = time.perf_counter_ns()
    p.stdout.read()
    rc = p.wait()
    t2 = time.perf_counter_ns()
    err.seek(0)
    log = err.read()
    if first != b"!" or rc != want_rc:
        sys.exit(f"bench-vmm: {cmd[0]} gave {first!r}, exit {rc} (want {want_rc}):\n{log}")
    own = re.search(r"first_exit_us=(\d+)", log)
    return (t1 - t0) / 1e6, (t2 - t0) / 1e6, int(own.group(1)) / 1e3 if own else None

def api_call(path, method, target, body=None):
    """One HTTP/1.1 request on cocoon-vmm's API socket; returns the status code."""
    data = json.dumps(body).encode() if body is not None else b""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(f"{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode() + data)
    reply = b""
    while chunk := s.recv(4096):
        reply += chunk
    s.close()
    return int(reply.split(b" ", 2)[1])

def api_run(payload):
    """(ms to the API socket answering, ms to the first serial byte) for cocoon-vmm
    configured and started over its API."""
    sock = os.path.join(work, "api.sock")
    err = open(os.path.join(work, "stderr.log"), "w+")
    t0 = time.perf_counter_ns()
    p = subprocess.Popen([vmm, "--api-sock", sock], stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=err)
    while True:
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(sock)
            s.close()
            break
        except OSError:
            if p.poll() is not None:
                sys.exit("bench-vmm: cocoon-vmm --api-sock exited early")
            time.sleep(0.0002)
    t_api = time.perf_counter_ns()
    config = {"vcpus": 1, "memory_mib": mem_mib, "serial": "stdout", "debug_exit": True,
              "boot": {"kernel": {"path": payload, "cmdline": "", "initrd": None}}}
    for method, target, body in (("PUT", "/vm/config", config), ("PUT", "/vm/start", None)):
        status = api_call(sock, method, target, body)
        if status >= 300:
            err.seek(0)
            sys.exit(f"bench-vmm: {method} {target} answered {status}:\n{err.read()}")
    first = p.stdout.read(1)
    t1 = time.perf_counter_ns()
    p.stdout.read()
    rc = p.wait()
    if first != b"!" or rc != 0x10:
        err.seek(0)
        sys.exit(f"bench-vmm: API-started VM gave {first!r}, exit {rc}:\n{err.read()}")
    return (t_api - t0) / 1e6, (t1 - t0) / 1e6

def smaps_kib(pid):
    """(RSS, PSS, guest RAM RSS, guest RAM PSS) in KiB."""
    maps, cur = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                cur = {"path": head[5] if len(head) > 5 else ""}
                maps.append(cur)
            elif head and head[0].endswith(":") and len(head) >= 2 and head[1].isdigit():
                cur[head[0][:-1]] = int(head[1])
    rss = sum(m.get("Rss", 0) for m in maps)
    pss = sum(m.get("Pss", 0) for m in maps)
    anon = [m for m in maps if m["path"] in ("", "[anon]") or m["path"].startswith("/memfd:")]
    guest = max((m for m in anon if m.get("Size", 0) >= mem_mib * 1024),
                key=lambda m: m["Size"], default=None)
    if guest is None:
        sys.exit(f"bench-vmm: no guest RAM mapping of >= {mem_mib} MiB in pid {pid}")
    return rss, pss, guest.get("Rss", 0), guest.get("Pss", 0)

def memory_run(cmd):
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    if p.stdout.read(1) != b"!":
        sys.exit(f"bench-vmm: {cmd[0]} hold payload did not start")
    time.sleep(0.3)
    try:
        return smaps_kib(p.pid)
    finally:
        p.kill()
        p.wait()

exit_elf, hold_elf = os.path.join(work, "exit.elf"), os.path.join(work, "hold.elf")
times = {name: [] for name in VMMS}
mem = {name: [] for name in VMMS}
api = []
for name, build in VMMS.items():          # warm the page cache, not measured
    timed_run(*build(exit_elf))
api_run(exit_elf)
for _ in range(runs):
    for name, build in VMMS.items():
        times[name].append(timed_run(*build(exit_elf)))
    api.append(api_run(exit_elf))
for _ in range(max(3, runs // 4)):
    for name, build in VMMS.items():
        mem[name].append(memory_run(build(hold_elf)[0]))

med = statistics.median
def col(name, i):
    return med(t[i] for t in times[name])
def mcol(name, f):
    return med(f(m) for m in mem[name]) / 1024

rows = [
    ("process start → first guest instruction (ms)", lambda n: col(n, 0)),
    ("process start → payload finished, VMM exited (ms)", lambda n: col(n, 1)),
    ("RSS, whole process (MiB)", lambda n: mcol(n, lambda m: m[0])),
    ("RSS beyond guest RAM (MiB)", lambda n: mcol(n, lambda m: m[0] - m[2])),
    ("PSS beyond guest RAM (MiB)", lambda n: mcol(n, lambda m: m[1] - m[3])),
]
print(f"| median of {runs} (memory: of {len(mem['qemu'])}) | cocoon-vmm | QEMU microvm | QEMU / cocoon-vmm |")
print("|---|---:|---:|---:|")
for label, f in rows:
    c, q = f("cocoon-vmm"), f("qemu")
    ratio = f"{q / c:.1f}×" if c > 0 else "–"
    print(f"| {label} | {c:.2f} | {q:.2f} | {ratio} |")
print(f"| cocoon-vmm over its API: process start → API socket answering (ms) | "
      f"{med(a[0] for a in api):.2f} | | |")
print(f"| cocoon-vmm over its API: process start → PUT config + start → first guest "
      f"instruction (ms) | {med(a[1] for a in api):.2f} | | |")
own = [t[2] for t in times["cocoon-vmm"] if t[2] is not None]
if own:
    print(f"\ncocoon-vmm's own metric, Vmm::start → first guest exit: median {med(own):.2f} ms "
          f"(the rest of the first-instruction time is exec, dynamic loading and argument parsing).")
spread = lambda n, i: (min(t[i] for t in times[n]), max(t[i] for t in times[n]))
for n in VMMS:
    lo, hi = spread(n, 0)
    print(f"{n}: first instruction min {lo:.2f} / max {hi:.2f} ms")
EOF
