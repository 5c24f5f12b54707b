//! Loading what the guest runs and describing the machine to it.
//!
//! Two sources: an uncompressed ELF vmlinux entered through its PVH note (32-bit
//! protected mode, `hvm_start_info` in RBX; an initrd is its one module), and raw
//! 64-bit code for test guests, started in long mode at its load address.

pub mod initrd;
pub mod pvh;

use std::fs::File;
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{load_cmdline, KernelLoader};
use serde::{Deserialize, Serialize};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::{CMDLINE_MAX_SIZE, CMDLINE_START, HIMEM_START, PVH_INFO_START};
use crate::arch::x86_64::regs::{write_boot_tables, CpuMode, EntryState, RegsError};

/// What the VM boots. JSON: `{"kernel": {"path", "cmdline", "initrd"}}` or
/// `{"raw": {"code": [bytes], "load_addr"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum BootSource {
    /// An uncompressed ELF vmlinux with a PVH entry note, and an initrd.
    Kernel {
        path: PathBuf,
        #[serde(default)]
        cmdline: String,
        #[serde(default)]
        initrd: Option<PathBuf>,
    },
    /// Raw 64-bit code loaded at `load_addr` and entered there in long mode, with
    /// the first 4 GiB identity-mapped (test guests).
    Raw { code: Vec<u8>, load_addr: u64 },
}

/// Errors while loading the boot source.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("opening kernel {path}")]
    OpenKernel {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the kernel ELF")]
    LoadKernel(#[source] linux_loader::loader::Error),
    #[error("the kernel has no PVH entry point (needs CONFIG_PVH)")]
    NoPvhEntry,
    #[error("kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    #[error("writing the command line")]
    WriteCmdline(#[source] linux_loader::loader::Error),
    #[error("opening initrd {path}")]
    OpenInitrd {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("initrd of {size} bytes does not fit in the {room} bytes above the kernel")]
    InitrdTooLarge { size: u64, room: u64 },
    #[error("reading initrd {path}")]
    ReadInitrd {
        path: PathBuf,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
    #[error("raw code does not fit in guest memory at {0:#x}")]
    RawCode(u64),
    #[error("writing PVH boot information")]
    Pvh(#[source] vm_memory::GuestMemoryError),
    #[error("writing boot tables")]
    Tables(#[source] RegsError),
}

/// Loads `source` into `mem`. `extra_cmdline` (device announcements) is appended to
/// a kernel's command line. Returns the boot vCPU's entry state.
pub fn load(
    mem: &GuestMemoryMmap,
    source: &BootSource,
    extra_cmdline: &[String],
) -> Result<EntryState, BootError> {
    match source {
        BootSource::Raw { code, load_addr } => {
            mem.write_slice(code, GuestAddress(*load_addr))
                .map_err(|_| BootError::RawCode(*load_addr))?;
            write_boot_tables(mem, CpuMode::Long).map_err(BootError::Tables)?;
            Ok(EntryState {
                mode: CpuMode::Long,
                rip: *load_addr,
                rsi: 0,
                rbx: 0,
            })
        }
        BootSource::Kernel {
            path,
            cmdline,
            initrd,
        } => {
            let cmdline = build_cmdline(cmdline, extra_cmdline)?;
            load_kernel(mem, path, &cmdline, initrd.as_deref())
        }
    }
}

fn load_kernel(
    mem: &GuestMemoryMmap,
    path: &Path,
    cmdline: &Cmdline,
    initrd_path: Option<&Path>,
) -> Result<EntryState, BootError> {
    let mut file = File::open(path).map_err(|source| BootError::OpenKernel {
        path: path.to_path_buf(),
        source,
    })?;
    let loaded = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
        .map_err(BootError::LoadKernel)?;
    let PvhBootCapability::PvhEntryPresent(entry) = loaded.pvh_boot_cap else {
        return Err(BootError::NoPvhEntry);
    };

    let initrd = initrd_path
        .map(|p| initrd::load(mem, p, loaded.kernel_end))
        .transpose()?;
    load_cmdline(mem, GuestAddress(CMDLINE_START), cmdline).map_err(BootError::WriteCmdline)?;
    pvh::write_start_info(mem, initrd).map_err(BootError::Pvh)?;
    write_boot_tables(mem, CpuMode::Protected).map_err(BootError::Tables)?;
    Ok(EntryState {
        mode: CpuMode::Protected,
        rip: entry.0,
        rsi: 0,
        rbx: PVH_INFO_START,
    })
}

/// The command line: the configured one, then each extra part.
pub fn build_cmdline(base: &str, extra: &[String]) -> Result<Cmdline, BootError> {
    let mut cmdline = Cmdline::new(CMDLINE_MAX_SIZE).map_err(BootError::Cmdline)?;
    for part in std::iter::once(base).chain(extra.iter().map(String::as_str)) {
        if !part.trim().is_empty() {
            cmdline
                .insert_str(part.trim())
                .map_err(BootError::Cmdline)?;
        }
    }
    Ok(cmdline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_appends_parts_and_enforces_the_limit() {
        let c = build_cmdline(
            "console=ttyS0",
            &["virtio_mmio.device=4K@0xd0000000:5".into()],
        )
        .unwrap();
        assert_eq!(
            c.as_cstring().unwrap().to_str().unwrap(),
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5"
        );
        assert!(build_cmdline(&"x".repeat(CMDLINE_MAX_SIZE), &[]).is_err());
    }

    #[test]
    fn raw_code_is_loaded_and_entered_in_long_mode() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 21)]).unwrap();
        let source = BootSource::Raw {
            code: vec![0xf4],
            load_addr: 0x10_0000,
        };
        let entry = load(&mem, &source, &[]).unwrap();
        assert_eq!((entry.mode, entry.rip), (CpuMode::Long, 0x10_0000));
        let byte: u8 = mem.read_obj(GuestAddress(0x10_0000)).unwrap();
        assert_eq!(byte, 0xf4);
        let far = BootSource::Raw {
            code: vec![0; 16],
            load_addr: (1 << 21) - 8,
        };
        assert!(matches!(load(&mem, &far, &[]), Err(BootError::RawCode(_))));
    }

    #[test]
    fn a_missing_kernel_is_reported_with_its_path() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 21)]).unwrap();
        let source = BootSource::Kernel {
            path: "/nonexistent/vmlinux".into(),
            cmdline: String::new(),
            initrd: None,
        };
        let err = load(&mem, &source, &[]).unwrap_err();
        assert!(matches!(err, BootError::OpenKernel { .. }));
    }
}
