//! A syscall allowlist, and its compilation to a seccomp BPF program with
//! `seccompiler`.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use super::ioctls::Request;

/// A test on one syscall argument, on its low 32 bits: every argument the filters
/// look at (ioctl requests, flags, address families, signal numbers, pids) is an
/// `int` to the kernel, so the upper half a caller may have sign-extended into does
/// not matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    /// Argument `.0` equals `.1`.
    Eq(u8, u64),
    /// Argument `.0` has none of the bits of `.1`.
    Clear(u8, u64),
    /// Argument `.0` has all the bits of `.1`.
    Set(u8, u64),
}

impl Cond {
    fn compile(self) -> Result<SeccompCondition, BackendError> {
        let (arg, op, value) = match self {
            Cond::Eq(arg, v) => (arg, SeccompCmpOp::Eq, v),
            Cond::Clear(arg, mask) => (arg, SeccompCmpOp::MaskedEq(mask), 0),
            Cond::Set(arg, mask) => (arg, SeccompCmpOp::MaskedEq(mask), mask),
        };
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
    }
}

/// When a syscall is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum When {
    Always,
    /// When all the conditions of any one of these rules hold.
    AnyOf(Vec<Vec<Cond>>),
}

/// Syscalls allowed, some only with certain arguments. Everything else gets the
/// filter's default action.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allowlist {
    entries: BTreeMap<i64, When>,
    /// `clone3` fails with `ENOSYS`, so glibc falls back to `clone`, whose flags a
    /// filter can check (`clone3` passes them in memory, out of a filter's reach).
    clone3_enosys: bool,
}

impl Allowlist {
    pub fn new() -> Allowlist {
        Allowlist::default()
    }

    /// Allows `syscalls` whatever their arguments.
    pub fn allow(&mut self, syscalls: &[libc::c_long]) -> &mut Allowlist {
        for &nr in syscalls {
            self.entries.insert(nr, When::Always);
        }
        self
    }

    /// Allows `syscall` when all of `conds` hold (or as before, if it was allowed).
    pub fn allow_if(&mut self, syscall: libc::c_long, conds: &[Cond]) -> &mut Allowlist {
        if conds.is_empty() {
            return self.allow(&[syscall]);
        }
        match self
            .entries
            .entry(syscall)
            .or_insert_with(|| When::AnyOf(Vec::new()))
        {
            When::Always => {}
            When::AnyOf(rules) => {
                if !rules.iter().any(|r| r == conds) {
                    rules.push(conds.to_vec());
                }
            }
        }
        self
    }

    /// Allows `syscall` when argument `arg` is one of `values`.
    pub fn allow_arg_in(
        &mut self,
        syscall: libc::c_long,
        arg: u8,
        values: &[u64],
    ) -> &mut Allowlist {
        for &v in values {
            self.allow_if(syscall, &[Cond::Eq(arg, v)]);
        }
        self
    }

    /// Allows `ioctl` with these requests, on any fd.
    pub fn allow_ioctls(&mut self, requests: &[Request]) -> &mut Allowlist {
        for &r in requests {
            self.allow_if(libc::SYS_ioctl, &[Cond::Eq(1, u64::from(r))]);
        }
        self
    }

    /// Makes `clone3` fail with `ENOSYS` (see the field).
    pub fn refuse_clone3(&mut self) -> &mut Allowlist {
        self.clone3_enosys = true;
        self
    }

    /// Adds everything `other` allows.
    pub fn extend(&mut self, other: &Allowlist) -> &mut Allowlist {
        for (&nr, when) in &other.entries {
            match when {
                When::Always => {
                    self.allow(&[nr]);
                }
                When::AnyOf(rules) => {
                    for r in rules {
                        self.allow_if(nr, r);
                    }
                }
            }
        }
        self.clone3_enosys |= other.clone3_enosys;
        self
    }

    /// Whether `syscall` is allowed whatever its arguments.
    #[cfg(test)]
    pub fn allows_always(&self, syscall: libc::c_long) -> bool {
        self.entries.get(&syscall) == Some(&When::Always)
    }

    /// Whether `syscall` is allowed with some arguments at least.
    #[cfg(test)]
    pub fn mentions(&self, syscall: libc::c_long) -> bool {
        self.entries.contains_key(&syscall)
    }

    /// Whether `syscall` is allowed when `conds` hold (exactly these, as one rule).
    #[cfg(test)]
    pub fn allows_with(&self, syscall: libc::c_long, conds: &[Cond]) -> bool {
        match self.entries.get(&syscall) {
            Some(When::Always) => true,
            Some(When::AnyOf(rules)) => rules.iter().any(|r| r == conds),
            None => false,
        }
    }

    /// The BPF program: allowed calls pass, everything else gets `default` (x86_64
    /// calls only; any other architecture's kills the process).
    pub fn compile(&self, default: SeccompAction) -> Result<BpfProgram, BackendError> {
        let mut rules = BTreeMap::new();
        for (&nr, when) in &self.entries {
            let chain = match when {
                When::Always => Vec::new(),
                When::AnyOf(alternatives) => alternatives
                    .iter()
                    .map(|conds| {
                        let conds = conds
                            .iter()
                            .map(|c| c.compile())
                            .collect::<Result<_, _>>()?;
                        SeccompRule::new(conds)
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            };
            rules.insert(nr, chain);
        }
        let filter = SeccompFilter::new(rules, default, SeccompAction::Allow, TargetArch::x86_64)?;
        let program = BpfProgram::try_from(filter)?;
        if !self.clone3_enosys {
            return Ok(program);
        }
        Ok(clone3_enosys_prefix().into_iter().chain(program).collect())
    }
}

/// `if (nr == clone3) return ERRNO(ENOSYS);`, run before the rest of the program.
/// It does not look at the architecture: whatever the ABI, a call numbered 435 fails
/// harmlessly, and everything else goes on to the program's own architecture check.
fn clone3_enosys_prefix() -> [sock_filter; 3] {
    /// `BPF_LD | BPF_W | BPF_ABS`
    const BPF_LD_W_ABS: u16 = 0x20;
    /// `BPF_JMP | BPF_JEQ | BPF_K`
    const BPF_JMP_JEQ_K: u16 = 0x15;
    /// `BPF_RET | BPF_K`
    const BPF_RET_K: u16 = 0x06;
    /// `offsetof(struct seccomp_data, nr)`.
    const NR_OFFSET: u32 = 0;
    [
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: NR_OFFSET,
        },
        sock_filter {
            code: BPF_JMP_JEQ_K,
            jt: 0,
            jf: 1,
            k: libc::SYS_clone3 as u32,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_accumulate_and_always_wins() {
        let mut a = Allowlist::new();
        a.allow_ioctls(&[1, 2, 2]);
        assert!(a.allows_with(libc::SYS_ioctl, &[Cond::Eq(1, 2)]));
        assert!(!a.allows_with(libc::SYS_ioctl, &[Cond::Eq(1, 3)]));
        assert!(!a.allows_always(libc::SYS_ioctl));
        let mut b = Allowlist::new();
        b.allow(&[libc::SYS_ioctl]);
        a.extend(&b);
        assert!(a.allows_always(libc::SYS_ioctl));
        a.allow_if(libc::SYS_ioctl, &[Cond::Eq(1, 9)]);
        assert!(
            a.allows_always(libc::SYS_ioctl),
            "a condition does not narrow Always"
        );
    }

    #[test]
    fn clone3_prefix_is_prepended_once_requested() {
        let mut a = Allowlist::new();
        a.allow(&[libc::SYS_read]);
        let plain = a.compile(SeccompAction::Trap).unwrap();
        a.refuse_clone3();
        let prefixed = a.compile(SeccompAction::Trap).unwrap();
        assert_eq!(prefixed.len(), plain.len() + 3);
        assert_eq!(&prefixed[3..], &plain[..]);
        assert_eq!(prefixed[2].k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
    }

    #[test]
    fn identical_default_and_match_actions_are_refused() {
        let mut a = Allowlist::new();
        a.allow(&[libc::SYS_read]);
        assert!(a.compile(SeccompAction::Allow).is_err());
    }
}
