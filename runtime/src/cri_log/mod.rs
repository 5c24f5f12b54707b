//! Container logs in the CRI format kubelet and `crictl logs` read:
//! `<RFC3339Nano timestamp> <stdout|stderr> <F|P> <text>\n`, where `F` ends a line and
//! `P` is a part of a longer one.

pub mod reader;
pub mod writer;
