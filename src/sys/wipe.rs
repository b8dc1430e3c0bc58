//! No plaintext left behind, by construction: every heap block is zeroed when it is freed
//! (and the old block when it is moved by a reallocation), and a connection thread wipes
//! its stack before it ends. Request and response bodies, serde values, base64 text, the
//! connection's read buffer and rustls's record buffers all live in ordinary `Vec`s and
//! `String`s; once dropped, none of their bytes stay in the process for a memory dump, a
//! later heap over-read or a core file to find. Types that hold key material still zeroize
//! themselves on drop (`zeroize`), which wipes *live* secrets as soon as they are done with;
//! this covers everything else.
//!
//! The binary selects [`WipingAllocator`] as its `#[global_allocator]` (`src/main.rs`);
//! library tests run with the system allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::MaybeUninit;

/// The system allocator, zeroing each block before it is returned to it.
pub struct WipingAllocator;

/// Zeroes `len` bytes at `ptr` in a way the compiler cannot drop as a dead store: the
/// empty `asm!` block takes the pointer and, without `nomem`, counts as reading the memory.
///
/// # Safety
/// `ptr..ptr+len` must be writable memory owned by the caller.
#[inline]
unsafe fn zero(ptr: *mut u8, len: usize) {
    // SAFETY: the caller owns the range and it is writable.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    // SAFETY: an empty instruction sequence; it only pins the stores above.
    unsafe { std::arch::asm!("/* {0} */", in(reg) ptr, options(nostack, preserves_flags)) };
}

// SAFETY: every method forwards to `System` with the layout it was given; `dealloc` and
// `realloc` only write to the block they are about to free, which the caller owns.
unsafe impl GlobalAlloc for WipingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller hands us the block (`layout.size()` bytes at `ptr`) to free.
        unsafe {
            zero(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    /// Never lets the system allocator move a block itself (it would free the old one
    /// unwiped): allocates, copies, wipes and frees the old block.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `new_size` is non-zero and, rounded up to the alignment, does not
        // overflow (the caller's contract), so this layout is valid.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block of a valid layout.
        let new = unsafe { System.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and distinct; copy what both can hold, then wipe
            // and free the old one, which the caller gave up.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

/// Zeroes the spare capacity of a buffer that is kept (a keep-alive connection's read
/// buffer): the bytes of the previous request past `len` are gone before the next one.
pub fn wipe_spare(buf: &mut Vec<u8>) {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is the Vec's own allocation past its length: writable and ours.
    unsafe { zero(spare.as_mut_ptr().cast::<u8>(), spare.len()) };
}

/// Overwrites `N` bytes of this thread's stack below the caller's frame with zeros: what
/// the thread's deeper calls left there (ring's block buffers, HMAC state, parsing
/// scratch) does not outlive it in glibc's cache of thread stacks. `N` must leave room
/// below for the guard page; the caller passes its stack size minus a margin.
#[inline(never)]
pub fn wipe_stack<const N: usize>() {
    let mut area = [MaybeUninit::<u8>::uninit(); N];
    // SAFETY: `area` is a local array of `N` bytes on this stack.
    unsafe { zero(area.as_mut_ptr().cast::<u8>(), N) };
    std::hint::black_box(&mut area);
}
