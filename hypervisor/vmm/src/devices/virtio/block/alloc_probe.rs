//! The unit-test binary's global allocator: the system allocator, plus a per-thread
//! tally of live heap bytes while [`peak_heap`] runs, so tests can assert that what
//! the guest sends does not decide how much the host allocates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Probe;

#[global_allocator]
static PROBE: Probe = Probe;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(delta: isize) {
    // Const-initialized cells without destructors: always accessible, never allocate.
    if TRACKING.try_with(Cell::get).unwrap_or(false) {
        let live = LIVE.with(|l| {
            l.set(l.get() + delta);
            l.get()
        });
        PEAK.with(|p| p.set(p.get().max(live)));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator, which upholds
// the GlobalAlloc contract; the bookkeeping touches only thread-local cells.
unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is valid (GlobalAlloc::alloc's contract).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            note(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence System) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        note(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from System with `layout`; the caller checked `new_size`.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            note(new_size as isize - layout.size() as isize);
        }
        p
    }
}

/// Runs `f` and returns its result with the peak of heap bytes this thread had
/// allocated (and not yet freed) during it.
pub fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LIVE.with(|l| l.set(0));
    PEAK.with(|p| p.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, PEAK.with(Cell::get).max(0) as usize)
}

#[test]
fn peak_heap_sees_allocations_on_this_thread_only() {
    let (v, peak) = peak_heap(|| vec![1u8; 100_000]);
    assert!(peak >= 100_000, "{peak}");
    drop(v);
    let ((), peak) = peak_heap(|| {
        std::hint::black_box(vec![0u8; 10]);
    });
    assert!(peak < 1000, "{peak}");
    let ((), peak) = peak_heap(|| {
        std::thread::scope(|s| {
            s.spawn(|| std::hint::black_box(vec![0u8; 1 << 20]));
        })
    });
    assert!(peak < 1 << 20, "{peak}");
}
