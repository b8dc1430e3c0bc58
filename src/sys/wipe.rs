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

/// Zeroes `buf` in a way the compiler cannot drop as a dead store: the part of a kept
/// buffer that held plaintext a moment ago (a connection's TLS receive buffer after its
/// records were decrypted in place and consumed).
pub fn wipe(buf: &mut [u8]) {
    // SAFETY: `buf` is a live, writable slice the caller borrows mutably.
    unsafe { zero(buf.as_mut_ptr(), buf.len()) };
}

/// Zeroes the spare capacity of a buffer that is kept (a keep-alive connection's read
/// buffer): the bytes of the previous request past `len` are gone before the next one.
pub fn wipe_spare(buf: &mut Vec<u8>) {
    let spare = buf.spare_capacity_mut();
    // SAFETY: `spare` is the Vec's own allocation past its length: writable and ours.
    unsafe { zero(spare.as_mut_ptr().cast::<u8>(), spare.len()) };
}

/// Overwrites `N` bytes of this thread's stack below the caller's frame with zeros.
#[inline(never)]
fn wipe_below<const N: usize>() {
    let mut area = [MaybeUninit::<u8>::uninit(); N];
    // SAFETY: `area` is a local array of `N` bytes on this stack.
    unsafe { zero(area.as_mut_ptr().cast::<u8>(), N) };
    std::hint::black_box(&mut area);
}

/// How much of the stack right below [`release_stack`]'s frame is zeroed in place rather
/// than given back: the frames of the calls that give back the rest live there. It is
/// [`RELEASE_BELOW`] plus a page and a little, so that the zeroed band reaches below the
/// page-aligned end of the released range whatever the alignment.
const IN_USE_BAND: usize = RELEASE_BELOW + (5 << 10);

/// Where the released range ends, below the caller's frame: room for the frames of
/// `mincore`, `munlock`, `madvise` and `mlock2` and their libc wrappers (a few hundred
/// bytes), which run while the range below is given back.
const RELEASE_BELOW: usize = 4 << 10;

/// Without glibc's word on where the stack ends, how far above `size` below the caller
/// the release stops: room for the frames above the caller, so it never reaches the guard.
const GUARD_MARGIN: usize = 16 << 10;

/// Pages looked at per `mincore` call.
const MINCORE_CHUNK: usize = 64;

/// The lowest usable address of this thread's stack (above its guard page), from glibc's
/// record of the thread (`pthread_getattr_np`). `None` if it cannot say.
fn stack_low() -> Option<usize> {
    let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is written by the call before it is read, and destroyed once.
    unsafe {
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut addr = std::ptr::null_mut();
        let mut size = 0;
        let r = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (r == 0).then_some(addr as usize)
    }
}

/// A thread's own stack, as far as wiping it goes: where its usable range ends, asked of
/// glibc once (`pthread_getattr_np` takes the thread list lock, reads the CPU affinity with
/// a system call and allocates), so that a thread serving one connection after another
/// pays for it once, not per connection.
#[derive(Debug, Clone, Copy)]
pub struct ThreadStack {
    /// The lowest usable address (above the guard page), page-aligned; 0 when unknown.
    low: usize,
}

impl ThreadStack {
    /// The calling thread's stack. `size` is the stack size the thread was spawned with;
    /// it bounds the range only if glibc cannot say where the stack ends (then the deepest
    /// [`GUARD_MARGIN`] is left alone).
    #[inline(never)]
    pub fn current(size: usize) -> ThreadStack {
        let here = std::hint::black_box(0u8);
        let here = &here as *const u8 as usize;
        let low = stack_low().unwrap_or_else(|| {
            (here + GUARD_MARGIN).saturating_sub(size).next_multiple_of(page_size())
        });
        ThreadStack { low: if low.is_multiple_of(page_size()) { low } else { 0 } }
    }

    /// The page-aligned range below a frame at `here` that no live frame uses: from the
    /// stack's low end to [`RELEASE_BELOW`] under `here`. `None` when there is none.
    fn unused_below(&self, here: usize) -> Option<(usize, usize)> {
        let end = here.saturating_sub(RELEASE_BELOW) & !(page_size() - 1);
        (self.low != 0 && end > self.low).then_some((self.low, end))
    }

    /// Zeroes what the thread's calls left on its stack below the caller (ring's block
    /// buffers, HMAC state, parsing scratch), keeping the pages: a connection thread that
    /// waits for the next connection runs this in between, so no byte of one connection
    /// is on the stack while it waits or when the next one starts. The band right below
    /// the caller is zeroed in place and, below it, every resident page (`mincore`: a page
    /// that is not resident was never touched and holds nothing). The pages stay resident
    /// (and, under `mlockall`, locked) for the next connection, which touches them again:
    /// two system calls at most instead of the four of [`ThreadStack::release`] and the
    /// page faults of a fresh stack.
    #[inline(never)]
    pub fn wipe(&self) {
        let here = std::hint::black_box(0u8);
        let here = &here as *const u8 as usize;
        wipe_below::<IN_USE_BAND>();
        if let Some((low, end)) = self.unused_below(here) {
            zero_resident(low, end, page_size());
        }
    }

    /// Ends a thread's use of its stack, before the thread exits into glibc's cache of
    /// stacks: what its calls left there is zeroed as by [`ThreadStack::wipe`], and the
    /// pages are handed back to the kernel, so that a cached stack costs nothing until it
    /// is used again.
    ///
    /// Zeroing the whole stack would make every page of it resident, and under `mlockall`
    /// locked, defeating `MCL_ONFAULT` (256 KiB per cached or reused thread instead of the
    /// few pages a connection touches). Instead the touched pages below the in-place band
    /// are zeroed and then discarded (`MADV_DONTNEED`: the next touch maps a fresh zero
    /// page). The kernel refuses to discard locked pages, so under `MCL_ONFAULT` the range
    /// is unlocked first (it holds only zeros by then) and locked again on fault
    /// (`mlock2(MLOCK_ONFAULT)`), so what a later thread writes there is locked as before.
    /// Under the older full lock the pages stay resident, zeroed.
    ///
    /// Signals must be blocked on the calling thread (they are on every server thread): a
    /// handler would run on the range being released.
    #[inline(never)]
    pub fn release(&self) {
        let here = std::hint::black_box(0u8);
        let here = &here as *const u8 as usize;
        wipe_below::<IN_USE_BAND>();
        let Some((low, end)) = self.unused_below(here) else { return };
        zero_resident(low, end, page_size());
        // SAFETY: `low..end` is this thread's own stack below every live frame (ours sits
        // above `end`); nothing refers to it any more, and after the discard it reads as
        // zeros.
        unsafe {
            let (addr, len) = (low as *mut libc::c_void, end - low);
            match super::locking() {
                super::Locking::Full => {}
                super::Locking::None => {
                    libc::madvise(addr, len, libc::MADV_DONTNEED);
                }
                super::Locking::OnFault => {
                    if libc::munlock(addr, len) != 0 {
                        return;
                    }
                    libc::madvise(addr, len, libc::MADV_DONTNEED);
                    let onfault = libc::MLOCK_ONFAULT as libc::c_long;
                    if libc::syscall(libc::SYS_mlock2, addr, len, onfault) != 0 {
                        // Never leave the range unlocked: lock it whole (resident again).
                        libc::mlock(addr, len);
                    }
                }
            }
        }
    }
}

/// [`ThreadStack::release`] for a thread that ends after one connection.
#[inline(never)]
pub fn release_stack(size: usize) {
    ThreadStack::current(size).release();
}

/// Zeroes the resident pages of `low..end` (page-aligned, this thread's unused stack).
fn zero_resident(low: usize, end: usize, page: usize) {
    let mut vec = [0u8; MINCORE_CHUNK];
    let mut at = low;
    while at < end {
        let len = (end - at).min(MINCORE_CHUNK * page);
        // SAFETY: `at..at+len` is page-aligned and mapped (our stack); `vec` holds one
        // byte per page of it.
        let r = unsafe { libc::mincore(at as *mut libc::c_void, len, vec.as_mut_ptr()) };
        for (i, v) in vec[..len / page].iter().enumerate() {
            // A page whose residency is unknown is zeroed too.
            if r != 0 || v & 1 != 0 {
                // SAFETY: one page of our own unused stack, writable.
                unsafe { zero((at + i * page) as *mut u8, page) };
            }
        }
        at += len;
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the process.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaves `marker` on the stack about 16 KiB below the caller's frame, as a deep call
    /// of a connection (ring, parsing) leaves its scratch, and returns.
    #[inline(never)]
    fn leave_marker(marker: &[u8]) {
        let mut deep = [0u8; 16 << 10];
        deep[64..64 + marker.len()].copy_from_slice(marker);
        std::hint::black_box(&mut deep);
    }

    /// Whether `marker` is anywhere on this thread's stack below the caller's frame (less
    /// a margin for this function's own frame).
    #[inline(never)]
    fn on_stack(stack: &ThreadStack, marker: &[u8]) -> bool {
        let here = std::hint::black_box(0u8);
        let here = &here as *const u8 as usize;
        let Some((low, _)) = stack.unused_below(here) else { panic!("no stack range") };
        let end = here - (2 << 10);
        // SAFETY: `low..end` is mapped, readable memory of this thread's own stack, below
        // every live frame; it is only read, byte by byte, through volatile reads.
        (low..end - marker.len()).any(|a| {
            (0..marker.len())
                .all(|i| unsafe { ((a + i) as *const u8).read_volatile() } == marker[i])
        })
    }

    fn marker() -> Box<[u8]> {
        // Built at run time and kept on the heap, so that only `leave_marker` puts it on
        // the stack.
        (0..32u8).map(|i| i.wrapping_mul(37) ^ 0xa5).collect()
    }

    /// Leaves the marker deep on a fresh thread's stack, checks that the scan sees it, runs
    /// `end` (a wipe or a release) and checks that it is gone, `rounds` times.
    fn marker_gone_after(rounds: usize, end: fn(&ThreadStack)) {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                let stack = ThreadStack::current(256 << 10);
                let m = marker();
                for _ in 0..rounds {
                    leave_marker(&m);
                    assert!(on_stack(&stack, &m), "the marker was not left on the stack");
                    end(&stack);
                    assert!(!on_stack(&stack, &m), "the marker survived");
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// What a connection left deep on a kept thread's stack is gone after `wipe`, each time
    /// (the scan finds it before, so it can see it).
    #[test]
    fn wipe_zeroes_what_a_connection_left_on_the_stack() {
        marker_gone_after(3, ThreadStack::wipe);
    }

    /// The same for `release` (the end of a thread that served one connection).
    #[test]
    fn release_zeroes_what_a_connection_left_on_the_stack() {
        marker_gone_after(1, ThreadStack::release);
    }
}
