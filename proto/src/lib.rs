//! Cocoon's agent API, generated from `proto/cocoon/agent/v1/agent.proto`.

/// `cocoon.agent.v1`: the host ↔ agent API.
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("cocoon.agent.v1");
    }
}

/// The vsock port the agent listens on inside the guest.
pub const AGENT_VSOCK_PORT: u32 = 1024;

/// Deterministic pseudo-random bytes for the Diagnostics service (xorshift64*), so both
/// ends can produce or check the same stream from a seed.
#[derive(Debug, Clone)]
pub struct PatternStream {
    state: u64,
}

impl PatternStream {
    pub fn new(seed: u64) -> Self {
        // xorshift must not start from zero.
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Fills `buf` with the next bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let mut x = self.state;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.state = x;
            let word = x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_not_constant() {
        let (mut a, mut b) = (PatternStream::new(7), PatternStream::new(7));
        let (mut x, mut y) = (vec![0u8; 1000], vec![0u8; 1000]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert!(x.iter().any(|&v| v != x[0]));
        let mut c = PatternStream::new(8);
        c.fill(&mut y);
        assert_ne!(x, y);
    }
}
