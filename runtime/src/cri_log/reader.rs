//! Reading CRI-format log files.
