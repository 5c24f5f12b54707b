//! The Intel MultiProcessor table (MP spec 1.4): how a guest without ACPI learns its
//! CPUs, the IOAPIC and how ISA interrupts reach it.
//!
//! The floating pointer sits at the start of the EBDA, where Linux scans for it; the
//! configuration table follows it. Built as bytes: no layout-sensitive structs.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_START, EBDA_SCAN_SIZE, EBDA_START, IOAPIC_START, IRQ_MAX};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
/// Family 6; FPU and APIC present.
const CPU_SIGNATURE: u32 = 0x600;
const CPU_FEATURES: u32 = (1 << 0) | (1 << 9);
const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
const ISA_BUS_ID: u8 = 0;
const FLOATING_POINTER_SIZE: usize = 16;
const HEADER_SIZE: usize = 44;

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("no vCPUs")]
    NoCpus,
    #[error("{0} vCPUs do not fit in the MP table")]
    TooManyCpus(u8),
    #[error("writing the MP table to guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// Builds the floating pointer and configuration table for `cpus` vCPUs, to be
/// placed at `base`.
pub fn build(cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 {
        return Err(MptableError::NoCpus);
    }
    let table_addr = base + FLOATING_POINTER_SIZE as u64;
    let ioapic_id = cpus;

    let mut entries = Vec::new();
    for cpu in 0..cpus {
        let flags = CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 };
        entries.extend_from_slice(&[ENTRY_PROCESSOR, cpu, APIC_VERSION, flags]);
        entries.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        entries.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
    }
    entries.extend_from_slice(&[ENTRY_BUS, ISA_BUS_ID]);
    entries.extend_from_slice(b"ISA   ");
    entries.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    entries.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    // ISA IRQ n arrives on IOAPIC pin n; polarity and trigger conform to the bus.
    for irq in 0..=IRQ_MAX as u8 {
        entries.extend_from_slice(&[ENTRY_INTSRC, INT_TYPE_INT, 0, 0]);
        entries.extend_from_slice(&[ISA_BUS_ID, irq, ioapic_id, irq]);
    }
    // The PIC's output on every LAPIC's LINT0, NMI on LINT1.
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_EXTINT, 0, 0, ISA_BUS_ID, 0, 0xff, 0]);
    entries.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_NMI, 0, 0, ISA_BUS_ID, 0, 0xff, 1]);
    let entry_count = u16::from(cpus) + 2 + (IRQ_MAX as u16 + 1) + 2;

    let table_len = HEADER_SIZE + entries.len();
    if FLOATING_POINTER_SIZE + table_len > EBDA_SCAN_SIZE as usize {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let mut table = Vec::with_capacity(table_len);
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&(table_len as u16).to_le_bytes());
    table.extend_from_slice(&[4, 0]); // spec revision 1.4, checksum
    table.extend_from_slice(b"COCOON  ");
    table.extend_from_slice(b"COCOON-VMM  ");
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&entry_count.to_le_bytes());
    table.extend_from_slice(&(APIC_START as u32).to_le_bytes());
    table.extend_from_slice(&[0; 4]); // extended table length, checksum, reserved
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut out = Vec::with_capacity(FLOATING_POINTER_SIZE + table_len);
    out.extend_from_slice(b"_MP_");
    out.extend_from_slice(&(table_addr as u32).to_le_bytes());
    out.extend_from_slice(&[1, 4, 0]); // length in 16-byte units, revision, checksum
    out.extend_from_slice(&[0; 5]); // feature bytes: a configuration table is present
    out[10] = checksum(&out);
    out.extend_from_slice(&table);
    Ok(out)
}

/// Writes the MP table for `cpus` vCPUs at the start of the EBDA.
pub fn setup(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(MptableError::Memory)
}

/// The byte that makes `bytes` sum to zero (the byte's own slot must hold zero).
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |sum, b| sum.wrapping_add(*b))
        .wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
    }

    #[test]
    fn checksums_and_pointers_are_consistent() {
        for cpus in [1, 2, 32] {
            let t = build(cpus, EBDA_START).unwrap();
            let (fp, table) = t.split_at(FLOATING_POINTER_SIZE);
            assert_eq!(&fp[..4], b"_MP_");
            assert_eq!(sum(fp), 0);
            let ptr = u32::from_le_bytes(fp[4..8].try_into().unwrap());
            assert_eq!(u64::from(ptr), EBDA_START + 16);
            assert_eq!(&table[..4], b"PCMP");
            let len = u16::from_le_bytes(table[4..6].try_into().unwrap());
            assert_eq!(usize::from(len), table.len());
            assert_eq!(sum(table), 0);
            let count = u16::from_le_bytes(table[34..36].try_into().unwrap());
            assert_eq!(count, u16::from(cpus) + 28);
            // The first processor entry is the enabled boot processor.
            assert_eq!(&table[44..48], &[0, 0, APIC_VERSION, 3]);
        }
    }

    #[test]
    fn too_many_or_no_cpus_is_an_error() {
        assert!(matches!(build(0, 0), Err(MptableError::NoCpus)));
        assert!(matches!(build(64, 0), Err(MptableError::TooManyCpus(64))));
    }
}
