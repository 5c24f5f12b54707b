//! A process's stdio, as the agent holds it: gRPC streams on one side, pipes or a pty
//! master on the other, never polled.
//!
//! Output policy: each output stream (stdout, stderr, or the terminal) has a buffer of
//! at most [`output::BUFFER_LIMIT`] bytes. The agent reads the pipe only while the
//! buffer has room, so when nobody reads, the pipe fills and the process blocks in
//! `write(2)` (backpressure) — output is never dropped or truncated, and a reader that
//! attaches late receives everything from the first byte not yet read. A chunk is
//! taken out of the buffer only when the gRPC stream asks for the next item; bytes
//! already handed to the transport when a reader disconnects are not replayed.

pub mod output;
pub mod stdin;
pub mod tty;

pub use output::Output;
pub use stdin::Stdin;
