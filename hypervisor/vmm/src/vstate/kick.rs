//! Getting a vCPU thread out of `KVM_RUN`, to stop it or to park it (pause).
//!
//! A real-time signal is sent to the thread. Its handler sets `immediate_exit` in
//! the thread's own `kvm_run` page (found through a thread-local pointer), so the
//! signal is not lost if it lands just before the thread enters `KVM_RUN`: that
//! call then returns `EINTR` at once. The run loop clears the flag and checks
//! whether it should stop or park.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;
use std::sync::OnceLock;

use libc::{c_int, c_void, siginfo_t};
use vmm_sys_util::signal::{register_signal_handler, unblock_signal, SIGRTMIN};

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, while its vCPU fd is alive.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// The signal that kicks vCPU threads.
pub fn kick_signal() -> c_int {
    SIGRTMIN()
}

extern "C" fn handle_kick(_num: c_int, _info: *mut siginfo_t, _ctx: *mut c_void) {
    // A const-initialized thread-local without a destructor: no allocation or lazy
    // initialization happens here, so this is async-signal-safe.
    let flag = IMMEDIATE_EXIT.with(Cell::get);
    if !flag.is_null() {
        // SAFETY: the pointer is set by `ImmediateExitGuard::new` on this thread to the
        // `immediate_exit` byte of this thread's live `kvm_run` mapping, and cleared
        // before that mapping goes away; the handler runs on the same thread, so the
        // mapping is live. A volatile byte store is what KVM expects of this field.
        unsafe { flag.write_volatile(1) };
    }
}

static INSTALLED: OnceLock<Result<(), vmm_sys_util::errno::Error>> = OnceLock::new();

/// Installs the kick handler, once per process; every caller sees the outcome.
pub fn install_handler() -> Result<(), vmm_sys_util::errno::Error> {
    *INSTALLED.get_or_init(|| register_signal_handler(kick_signal(), handle_kick))
}

/// Publishes the current thread's `immediate_exit` byte to the kick handler for as
/// long as the guard lives, and makes sure the kick signal is not blocked.
/// Not `Send`: it must be dropped on the thread that created it.
pub struct ImmediateExitGuard(PhantomData<*const ()>);

impl ImmediateExitGuard {
    /// # Safety
    ///
    /// `flag` must point at the `immediate_exit` byte of a `kvm_run` mapping that stays
    /// mapped until the returned guard is dropped, and the guard must be dropped on
    /// the thread that created it.
    pub unsafe fn new(flag: *mut u8) -> ImmediateExitGuard {
        IMMEDIATE_EXIT.with(|p| p.set(flag));
        if let Err(e) = unblock_signal(kick_signal()) {
            tracing::warn!(error = %e, "unblocking the vCPU kick signal");
        }
        ImmediateExitGuard(PhantomData)
    }
}

impl Drop for ImmediateExitGuard {
    fn drop(&mut self) {
        IMMEDIATE_EXIT.with(|p| p.set(ptr::null_mut()));
    }
}
