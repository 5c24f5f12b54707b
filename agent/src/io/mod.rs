//! A process's stdio, as the agent holds it: gRPC streams on one side, pipes or a pty
//! master on the other, never polled.
//!
//! Output policy: each output stream (stdout, stderr, or the terminal) has a buffer of
//! at most [`output::BUFFER_LIMIT`] bytes. The agent reads the pipe only while the
//! buffer has room, so when nobody reads, the pipe fills and the process blocks in
//! `write(2)` (backpressure) — output is never dropped or truncated, and a reader that
//! attaches late receives everything from the first byte not yet read. Bytes are
//! taken out of the buffer only when the gRPC stream asks for the next item — all that
//! is buffered then, up to [`output::MESSAGE`] bytes, as one message, so a writer's
//! small writes are coalesced while the transport is busy and never delayed when it is
//! idle; bytes already handed to the transport when a reader disconnects are not
//! replayed. Output pipes ask the kernel for a 256 KiB buffer (kernel memory, outside
//! the bound above) so that writer and pump wake each other less often.

pub mod output;
pub mod stdin;
pub mod tty;

pub use output::Output;
pub use stdin::Stdin;
