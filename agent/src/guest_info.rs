//! Facts about the machine the agent runs on, for GetGuestDetails.

use nix::sys::utsname::uname;
use nix::unistd::{sysconf, SysconfVar};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineFacts {
    pub kernel_release: String,
    pub kernel_version: String,
    pub memory_total_bytes: u64,
    pub vcpus: u32,
}

/// Reads uname, /proc/meminfo and the online CPU count.
pub fn read_machine_facts() -> MachineFacts {
    let (kernel_release, kernel_version) = match uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.version().to_string_lossy().into_owned(),
        ),
        Err(_) => (String::new(), String::new()),
    };
    let memory_total_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| parse_mem_total(&s))
        .unwrap_or(0);
    let vcpus = sysconf(SysconfVar::_NPROCESSORS_ONLN)
        .ok()
        .flatten()
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0);
    MachineFacts {
        kernel_release,
        kernel_version,
        memory_total_bytes,
        vcpus,
    }
}

/// `MemTotal:  123 kB` → bytes.
pub fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut parts = line.split_whitespace().skip(1);
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_parsed_in_bytes() {
        let s = "MemTotal:         247756 kB\nMemFree:          1 kB\n";
        assert_eq!(parse_mem_total(s), Some(247756 * 1024));
        assert_eq!(parse_mem_total("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: x kB\n"), None);
    }

    #[test]
    fn facts_of_this_machine_are_plausible() {
        let f = read_machine_facts();
        assert!(!f.kernel_release.is_empty());
        assert!(f.memory_total_bytes > 16 * 1024 * 1024);
        assert!(f.vcpus >= 1);
    }
}
