//! Container logs in the CRI format kubelet and `crictl logs` read:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\n`, where `F` ends a line and
//! `P` is a part of a longer one.

pub mod reader;
pub mod writer;

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}
