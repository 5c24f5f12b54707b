//! Test code wrapped as a "kernel" the `cocoon-vmm` binary boots: a minimal ELF64
//! with one loadable segment and the PVH entry note (`XEN_ELFNOTE_PHYS32_ENTRY`).
//!
//! The code is entered as PVH enters a kernel: 32-bit protected mode, flat
//! segments, paging off. The [`super::asm::Asm`] instructions the test guests use
//! mean the same there, with one exception: `store64`'s REX.W prefix is `dec eax` in
//! 32-bit mode, so it stores only the low half (the high half of fresh guest memory
//! is zero anyway) and clobbers eax.

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const NOTE_AT: usize = EHDR_SIZE + 2 * PHDR_SIZE;
/// Note header (namesz, descsz, type), "Xen\0", the 32-bit entry.
const NOTE_SIZE: usize = 12 + 4 + 4;
const CODE_AT: usize = 0x100;
const PT_LOAD: u32 = 1;
const PT_NOTE: u32 = 4;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn phdr(
    out: &mut Vec<u8>,
    kind: u32,
    flags: u32,
    offset: usize,
    addr: u64,
    size: usize,
    align: u64,
) {
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(offset as u64).to_le_bytes());
    out.extend_from_slice(&addr.to_le_bytes()); // p_vaddr
    out.extend_from_slice(&addr.to_le_bytes()); // p_paddr
    out.extend_from_slice(&(size as u64).to_le_bytes()); // p_filesz
    out.extend_from_slice(&(size as u64).to_le_bytes()); // p_memsz
    out.extend_from_slice(&align.to_le_bytes());
}

/// An ELF image that loads `code` at `load_addr` (at least 1 MiB) and enters it there.
pub fn elf(code: &[u8], load_addr: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(CODE_AT + code.len());
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&u64::from(load_addr).to_le_bytes()); // e_entry
    out.extend_from_slice(&(EHDR_SIZE as u64).to_le_bytes()); // e_phoff
    out.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    out.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    out.extend_from_slice(&(EHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&(PHDR_SIZE as u16).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    out.extend_from_slice(&[0; 6]); // no section headers
    assert_eq!(out.len(), EHDR_SIZE);
    phdr(
        &mut out,
        PT_LOAD,
        5,
        CODE_AT,
        load_addr.into(),
        code.len(),
        0x1000,
    );
    phdr(&mut out, PT_NOTE, 4, NOTE_AT, 0, NOTE_SIZE, 4);
    out.extend_from_slice(&4u32.to_le_bytes()); // n_namesz
    out.extend_from_slice(&4u32.to_le_bytes()); // n_descsz
    out.extend_from_slice(&XEN_ELFNOTE_PHYS32_ENTRY.to_le_bytes());
    out.extend_from_slice(b"Xen\0");
    out.extend_from_slice(&load_addr.to_le_bytes());
    out.resize(CODE_AT, 0);
    out.extend_from_slice(code);
    out
}
