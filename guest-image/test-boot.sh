#!/usr/bin/env bash
# Boot check: builds the guest image with a tiny static C /init (prints markers, then
# reboots), boots it N times on QEMU microvm under TCG, checks the console and prints
# wall times (QEMU start -> exit) and their median.
#   guest-image/test-boot.sh [--runs N] [--kernel own|debian] [--keep DIR]
set -euo pipefail

RUNS=5
KIND=own
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --kernel) KIND=$2; shift 2 ;;
        --keep) WORK=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--kernel own|debian] [--keep DIR]" >&2; exit 2 ;;
    esac
done
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ -z "$WORK" ]; then WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT; fi
mkdir -p "$WORK"

cat > "$WORK/init.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/syscall.h>
#include <fcntl.h>
int main(void) {
    char l[512]; FILE *f; int n = 0;
    printf("COCOON-TEST-INIT pid=%d\n", getpid());
    mount("proc", "/proc", "proc", 0, 0);
    /* Debian kernel: load the listed modules first. */
    if ((f = fopen("/etc/cocoon/modules.list", "r"))) {
        while (fgets(l, sizeof l, f)) {
            l[strcspn(l, "\n")] = 0;
            int fd = open(l, O_RDONLY | O_CLOEXEC);
            if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) printf("MODULE-FAIL %s\n", l);
            if (fd >= 0) close(fd);
        }
        fclose(f);
    }
    if ((f = fopen("/proc/cpuinfo", "r"))) {
        while (fgets(l, sizeof l, f)) if (!strncmp(l, "processor", 9)) n++;
        fclose(f);
    }
    printf("CPUS=%d\nFS:", n);
    if ((f = fopen("/proc/filesystems", "r"))) {
        while (fgets(l, sizeof l, f)) { l[strcspn(l, "\n")] = 0; printf(" %s", strchr(l, '\t') + 1); }
        fclose(f);
    }
    printf("\nCOCOON-TEST-DONE\n");
    fflush(stdout);
    reboot(RB_AUTOBOOT);
    return 1;
}
EOF
cc -static -O2 -o "$WORK/init" "$WORK/init.c"
"$HERE/build.sh" --agent "$WORK/init" --out "$WORK/out" --kernel "$KIND"

# Debian's kernel has no MP-table parsing and no virtio-mmio command-line devices:
# it needs microvm's ACPI tables (CPUs, virtio-mmio). Ours runs with acpi=off.
KFILE="$WORK/out/vmlinux"; MACHINE=microvm,acpi=off
if [ "$KIND" = debian ]; then KFILE="$WORK/out/vmlinuz"; MACHINE=microvm,acpi=on; fi
KHZ=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
times=()
for i in $(seq 1 "$RUNS"); do
    log="$WORK/console.$i.log"; rm -f "$log"
    t0=$(date +%s%N)
    timeout 60 qemu-system-x86_64 -M "$MACHINE" -accel tcg,thread=multi -cpu max -smp 2 \
        -m 256 -nodefaults -no-user-config -display none -no-reboot -serial "file:$log" \
        -kernel "$KFILE" -initrd "$WORK/out/initramfs.img" \
        -append "console=ttyS0 reboot=t panic=-1 tsc_early_khz=$KHZ tsc=reliable quiet" \
        || { echo "boot $i: qemu failed or timed out (rc=$?)"; cat "$log"; exit 1; }
    t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 ))
    grep -q COCOON-TEST-DONE "$log" || { echo "boot $i: no marker on the console"; cat "$log"; exit 1; }
    grep -q '^CPUS=2' "$log" || { echo "boot $i: expected 2 CPUs"; cat "$log"; exit 1; }
    if grep -q MODULE-FAIL "$log"; then grep MODULE-FAIL "$log"; exit 1; fi
    FSES="virtiofs overlay cgroup2 erofs"; [ "$KIND" = debian ] || FSES="9p $FSES"
    for fs in $FSES; do
        grep '^FS:' "$log" | grep -qw -- "$fs" || { echo "boot $i: no $fs in /proc/filesystems"; cat "$log"; exit 1; }
    done
    echo "boot $i: ${ms} ms"
    times+=("$ms")
done
tr -d '\r' < "$WORK/console.1.log" | grep -E '^(COCOON|CPUS|FS:)'
echo "median of $RUNS: $(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') ms"
echo "initramfs: $(stat -c %s "$WORK/out/initramfs.img") bytes, kernel: $(stat -c %s "$KFILE") bytes"
