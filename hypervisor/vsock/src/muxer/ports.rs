//! Host-side ports for host-initiated connections, as Firecracker does: counting up from
//! 2^30, skipping ports in use.

use std::collections::HashSet;

const FIRST: u32 = 1 << 30;
/// `u32::MAX` is `VMADDR_PORT_ANY`; never hand it out.
const LAST: u32 = u32::MAX - 1;

#[derive(Debug)]
pub(crate) struct LocalPorts {
    next: u32,
    in_use: HashSet<u32>,
}

impl Default for LocalPorts {
    fn default() -> Self {
        LocalPorts {
            next: FIRST,
            in_use: HashSet::new(),
        }
    }
}

impl LocalPorts {
    /// A free port, or `None` if every one of the ~3·10^9 is taken (never, in practice:
    /// connections are capped far below that).
    pub(crate) fn alloc(&mut self) -> Option<u32> {
        for _ in 0..=self.in_use.len() {
            let port = self.next;
            self.next = if port >= LAST { FIRST } else { port + 1 };
            if self.in_use.insert(port) {
                return Some(port);
            }
        }
        None
    }

    pub(crate) fn free(&mut self, port: u32) {
        self.in_use.remove(&port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_ports_in_use_and_wraps() {
        let mut p = LocalPorts::default();
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert_eq!((a, b), (FIRST, FIRST + 1));
        p.free(a);
        p.next = LAST;
        assert_eq!(p.alloc(), Some(LAST));
        assert_eq!(p.alloc(), Some(FIRST));
        assert_eq!(p.alloc(), Some(FIRST + 2), "FIRST + 1 is still in use");
    }
}
