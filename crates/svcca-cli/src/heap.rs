//! The process heap: how it is set up at start-up, and what is handed back between tasks.
//!
//! Tasks allocate and free buffers of tens to hundreds of MB (a shard, a widened row chunk, a
//! projection, a tile's stacked projections). The heap keeps what they free, so the next task
//! reuses it instead of faulting fresh pages in ([`keep_large_buffers_mapped`]). Kept without
//! limit, though, the freed memory of differently shaped tasks adds up: a worker of a
//! 2,048-neuron sweep, whose tasks are planned under 1,024 MiB each, once held 1,271 MiB. So after
//! a task that leaves more than [`KEPT_FREE_BYTES`] of the heap free, its free pages go back to
//! the kernel ([`HeapReleasingExecutor`]); under that, they stay for the next task.

use std::sync::Arc;

use futures::future::BoxFuture;
use svcca_engine::driver::{TaskExecutor, TaskFailure, TaskOutput, TaskSpec};

/// Free heap a worker keeps between tasks for the next one to reuse: about what one task of a
/// 512-neuron sweep allocates, so that sweeps of small layers never hand memory back.
pub const KEPT_FREE_BYTES: usize = 256 << 20;

/// Serves every allocation below 1 GiB from one heap that keeps freed memory for reuse. glibc
/// serves each allocation above its mmap threshold (at most 32 MB) with a fresh mapping and
/// unmaps it on free, so the kernel faults in and zeroes every page again: in a
/// 60-representation sweep that was a third of all CPU time (5 million page faults).
/// Per-thread arenas cannot grow beyond 64 MB, so their large allocations would be mapped
/// anyway: one arena.
pub fn keep_large_buffers_mapped() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called once before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The heap's free bytes, where the allocator says (glibc); `None` elsewhere.
pub fn free_heap_bytes() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some(info.fordblks)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// When more than `keep` bytes of the heap are free, hands its free pages back to the kernel
/// (all but `keep` bytes at its top: glibc's `malloc_trim` releases every free page inside the
/// heap); returns whether it did.
pub fn release_free_heap(keep: usize) -> bool {
    match free_heap_bytes() {
        Some(free) if free > keep => {
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only returns unused pages of the heap to the kernel.
            unsafe {
                libc::malloc_trim(keep);
            }
            true
        }
        _ => false,
    }
}

/// Runs each task with `inner`, then hands free heap beyond [`KEPT_FREE_BYTES`] back.
pub struct HeapReleasingExecutor {
    inner: Arc<dyn TaskExecutor>,
}

impl HeapReleasingExecutor {
    pub fn wrap(inner: Arc<dyn TaskExecutor>) -> Arc<dyn TaskExecutor> {
        Arc::new(HeapReleasingExecutor { inner })
    }
}

impl TaskExecutor for HeapReleasingExecutor {
    fn execute(&self, task: TaskSpec) -> BoxFuture<'static, Result<TaskOutput, TaskFailure>> {
        let run = self.inner.execute(task);
        Box::pin(async move {
            let outcome = run.await;
            release_free_heap(KEPT_FREE_BYTES);
            outcome
        })
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident bytes of this process.
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        // SAFETY: sysconf only reads a system constant.
        pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
    }

    /// Set in the child process that runs the test's body.
    const CHILD: &str = "SVCCA_HEAP_TEST_CHILD";

    #[test]
    fn free_heap_beyond_what_is_kept_goes_back_to_the_kernel() {
        if std::env::var_os(CHILD).is_none() {
            // `main` sets the allocator up before any thread exists, so every thread allocates
            // from the one heap whose memory this is about. Here the test harness's threads
            // exist already (with heaps of their own, which glibc trims by itself): the body
            // runs again in a child process that has one heap from its start.
            let name = "heap::tests::free_heap_beyond_what_is_kept_goes_back_to_the_kernel";
            let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
                .args(["--exact", name, "--nocapture", "--test-threads", "1"])
                .env(CHILD, "1")
                .env("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")
                .output()
                .expect("the test binary runs");
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "the child failed:\n{text}"
            );
            return;
        }
        keep_large_buffers_mapped();
        let baseline = resident();
        // 64 blocks of 8 MiB, each touched, under the mmap threshold set above: served from the
        // heap and, once freed, kept by it (which is what the release is for).
        let blocks: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8 + 1; 8 << 20]).collect();
        assert!(blocks.iter().all(|b| b[b.len() - 1] != 0));
        drop(blocks);
        let held = resident().saturating_sub(baseline);
        assert!(held >= 448 << 20, "{} MiB kept after the free", held >> 20);
        let kept = 64 << 20;
        assert!(release_free_heap(kept));
        let after = resident().saturating_sub(baseline);
        assert!(
            after <= kept + (64 << 20),
            "{} MiB above the baseline after freeing 512 MiB and releasing",
            after >> 20
        );
        assert!(
            !release_free_heap(usize::MAX),
            "nothing is released while the free heap is under the threshold"
        );
    }
}
