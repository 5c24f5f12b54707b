//! cocoond: Cocoon's CRI v1 runtime daemon (work in progress).

fn main() {}
