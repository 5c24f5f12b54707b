//! CPUID for a vCPU: what KVM supports, with the topology and identity a guest
//! expects filled in and features we do not virtualize hidden.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX: hyper-threading (the EBX logical-processor count is valid).
const LEAF1_EDX_HTT: u32 = 1 << 28;
/// Leaf 0xB ECX level types.
const LEVEL_TYPE_THREAD: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Adjusts `cpuid` (from `KVM_GET_SUPPORTED_CPUID`) for vCPU `index` of `count`.
///
/// Topology: one socket, `count` cores, one thread per core; APIC ids are vCPU
/// indices. The PMU (leaf 0xA) is hidden.
pub fn filter(cpuid: &mut CpuId, index: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        filter_entry(entry, index, count);
    }
}

fn filter_entry(entry: &mut kvm_cpuid_entry2, index: u8, count: u8) {
    let apic_id = u32::from(index);
    let count = u32::from(count.max(1));
    match entry.function {
        0x1 => {
            // EBX: [31:24] initial APIC id, [23:16] logical processors, [15:8] CLFLUSH size.
            entry.ebx = (apic_id << 24) | (count << 16) | (entry.ebx & 0xffff);
            entry.ecx |= LEAF1_ECX_HYPERVISOR;
            if count > 1 {
                entry.edx |= LEAF1_EDX_HTT;
            } else {
                entry.edx &= !LEAF1_EDX_HTT;
            }
        }
        0x4 => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
            let cache_level = (entry.eax >> 5) & 0x7;
            let sharing = if cache_level >= 3 { count - 1 } else { 0 };
            entry.eax = (entry.eax & 0x3fff) | ((count - 1) << 26) | (sharing << 14);
        }
        0xa => {
            (entry.eax, entry.ebx, entry.ecx, entry.edx) = (0, 0, 0, 0);
        }
        0xb | 0x1f => {
            // Extended topology: level 0 is threads (1 per core), level 1 cores.
            let core_shift = u32::BITS - (count - 1).leading_zeros();
            (entry.eax, entry.ebx, entry.ecx) = match entry.index {
                0 => (0, 1, LEVEL_TYPE_THREAD << 8),
                1 => (core_shift, count, (LEVEL_TYPE_CORE << 8) | 1),
                n => (0, 0, n & 0xff),
            };
            entry.edx = apic_id;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0800,
            eax: 0xffff_ffff,
            ecx: 0,
            edx: 0,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_count_and_hypervisor_bit() {
        let mut e = entry(1, 0);
        filter_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0x0800);
        assert_ne!(e.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & LEAF1_EDX_HTT, 0);
    }

    #[test]
    fn extended_topology_describes_cores() {
        let mut l0 = entry(0xb, 0);
        let mut l1 = entry(0xb, 1);
        let mut l2 = entry(0xb, 2);
        for e in [&mut l0, &mut l1, &mut l2] {
            filter_entry(e, 2, 3);
        }
        assert_eq!((l0.eax, l0.ebx, l0.ecx, l0.edx), (0, 1, 0x100, 2));
        assert_eq!((l1.eax, l1.ebx, l1.ecx, l1.edx), (2, 3, 0x201, 2));
        assert_eq!((l2.eax, l2.ebx, l2.ecx & 0xff00), (0, 0, 0));
    }

    #[test]
    fn one_vcpu_has_no_htt_and_no_pmu() {
        let mut l1 = entry(1, 0);
        l1.edx = LEAF1_EDX_HTT;
        filter_entry(&mut l1, 0, 1);
        assert_eq!(l1.edx & LEAF1_EDX_HTT, 0);
        let mut pmu = entry(0xa, 0);
        filter_entry(&mut pmu, 0, 1);
        assert_eq!(pmu.eax, 0);
    }
}
