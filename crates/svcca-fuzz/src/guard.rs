//! The allocation guard: a global allocator that counts, and that treats one allocation above
//! [`ALLOC_LIMIT`] during a fuzz case as a crash.
//!
//! Why abort rather than panic or return null: a `GlobalAlloc` must not unwind (the standard
//! library documents that as undefined behaviour), and returning null sends the caller to
//! `handle_alloc_error`, which aborts anyway on stable Rust while leaving no record of the input.
//! So the guard checks the size *before* asking the system allocator, and on an oversize request
//! writes the input being run (published by the engine before each case with [`set_current`]) to
//! a record file opened in advance, then aborts. Nothing on that path allocates: the file is
//! already open, the number is formatted into a stack buffer. The supervising process (see
//! `main.rs`) sees the abort, reads the record, minimises the input by replaying truncations in
//! fresh processes, saves it with the other crashes and starts a new fuzzing process.
//!
//! The guard is armed only while a case runs ([`arm`]), on every thread (readers hand work to
//! tokio's blocking threads), so seed loading and the engine's own bookkeeping are not limited.

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// The largest single allocation a reader may make for one input: 256 MiB. Every legitimate
/// buffer of the readers is bounded by the input's own size (at most [`crate::mutate::MAX_INPUT`],
/// 1 MiB, for a fuzz case) or by a fixed block size (a 32 MiB shard, a 64 KiB read buffer), so a
/// request above this one was sized by a number read from the input, which an attacker chooses.
pub const ALLOC_LIMIT: usize = 256 << 20;

pub struct GuardAlloc;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGEST: AtomicUsize = AtomicUsize::new(0);
static CURRENT_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static CURRENT_LEN: AtomicUsize = AtomicUsize::new(0);
static TARGET_PTR: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static TARGET_LEN: AtomicUsize = AtomicUsize::new(0);
static RECORD: OnceLock<File> = OnceLock::new();

/// Where an oversize allocation writes the offending input before the process aborts.
/// Without one the input is only described on stderr.
pub fn set_record_file(file: File) {
    let _ = RECORD.set(file);
}

/// Publishes the input about to run, for the abort path. The slice must stay alive and
/// unchanged until the next call (the engine keeps it for the whole case).
pub fn set_current(target: &'static str, input: &[u8]) {
    TARGET_PTR.store(target.as_ptr().cast_mut(), Ordering::SeqCst);
    TARGET_LEN.store(target.len(), Ordering::SeqCst);
    CURRENT_PTR.store(input.as_ptr().cast_mut(), Ordering::SeqCst);
    CURRENT_LEN.store(input.len(), Ordering::SeqCst);
}

/// Arms or disarms the guard; arming resets the largest request seen.
pub fn arm(on: bool) {
    if on {
        LARGEST.store(0, Ordering::SeqCst);
    }
    ARMED.store(on, Ordering::SeqCst);
}

/// The largest single request since the guard was last armed.
pub fn largest() -> usize {
    LARGEST.load(Ordering::SeqCst)
}

/// Alignment of the GEMM backend's scratch (faer's x86 kernels keep, per thread, a buffer of
/// 4 KiB-aligned pages sized at twice the L3 cache, reserved on a thread's first product and
/// never touched beyond what a product uses). Its size follows the machine, not the input: on a
/// CPU reporting a 260 MiB L3 it is 520 MiB. No reader allocates page-aligned memory, so an
/// allocation with this alignment is not one an input sized.
const GEMM_SCRATCH_ALIGN: usize = 4096;

#[inline]
fn check_layout(layout: Layout, size: usize) {
    if layout.align() >= GEMM_SCRATCH_ALIGN {
        return;
    }
    check(size)
}

#[inline]
fn check(size: usize) {
    if ARMED.load(Ordering::Relaxed) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
        if size > ALLOC_LIMIT {
            oversize(size);
        }
    }
}

/// Formats `v` in decimal into `buf`, returning the digits. No allocation.
fn decimal(mut v: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cold]
fn oversize(size: usize) -> ! {
    ARMED.store(false, Ordering::SeqCst);
    let mut digits = [0u8; 20];
    let size_text = decimal(size, &mut digits);
    // SAFETY: set_current stored a live 'static str and a slice the engine keeps alive for the
    // whole case; we are inside that case (the guard is only armed then).
    let (target, input) = unsafe {
        let t = std::slice::from_raw_parts(
            TARGET_PTR.load(Ordering::SeqCst),
            TARGET_LEN.load(Ordering::SeqCst),
        );
        let p = CURRENT_PTR.load(Ordering::SeqCst);
        let input = if p.is_null() {
            &[][..]
        } else {
            std::slice::from_raw_parts(p, CURRENT_LEN.load(Ordering::SeqCst))
        };
        (t, input)
    };
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(b"svcca-fuzz: a single allocation of ");
    let _ = err.write_all(size_text);
    let _ = err.write_all(b" bytes (limit 268435456) while running target ");
    let _ = err.write_all(target);
    let _ = err.write_all(b"; aborting\n");
    if let Some(mut f) = RECORD.get() {
        let _ = f.write_all(b"OVERSIZE ");
        let _ = f.write_all(size_text);
        let _ = f.write_all(b" ");
        let _ = f.write_all(target);
        let _ = f.write_all(b"\n");
        let _ = f.write_all(input);
        let _ = f.sync_all();
    }
    std::process::abort()
}

// SAFETY: every method forwards to `System` with the same arguments; `check` never allocates
// and either returns or aborts the process, so the allocator never unwinds.
unsafe impl GlobalAlloc for GuardAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check_layout(layout, layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check_layout(layout, layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check_layout(layout, new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Parses a record written by an oversize abort: (requested bytes, target, input).
pub fn parse_record(bytes: &[u8]) -> Option<(usize, String, Vec<u8>)> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    let head = std::str::from_utf8(&bytes[..nl]).ok()?;
    let mut parts = head.split(' ');
    if parts.next()? != "OVERSIZE" {
        return None;
    }
    let size = parts.next()?.parse().ok()?;
    let target = parts.next()?.to_string();
    Some((size, target, bytes[nl + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_aligned_scratch_is_not_an_input_sized_allocation() {
        // The GEMM backend's per-thread scratch is page-aligned and sized by the cache, not the
        // input; with the guard armed it must pass (an oversize byte buffer would abort, which
        // tests/ci.rs checks in a child process).
        arm(true);
        let big = Layout::from_size_align(ALLOC_LIMIT * 2, GEMM_SCRATCH_ALIGN).unwrap();
        check_layout(big, big.size());
        arm(false);
    }

    #[test]
    fn decimal_and_record_round_trip() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(1 << 40, &mut b), b"1099511627776");
        let rec = b"OVERSIZE 1099511627776 npz\n\x93NUMPY\n".to_vec();
        let (size, target, input) = parse_record(&rec).unwrap();
        assert_eq!((size, target.as_str()), (1 << 40, "npz"));
        assert_eq!(input, b"\x93NUMPY\n");
        assert!(parse_record(b"garbage").is_none());
    }
}
