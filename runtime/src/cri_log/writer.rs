//! Writing CRI-format log files.
