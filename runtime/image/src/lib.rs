//! Cocoon's image store (work in progress).
