//! SYSTEM MEMORY
//!
//! After a sweep forgets many remotes, the allocator holds on to the freed
//! memory; `malloc_trim(3)` hands it back to the system, so the balancer's
//! resident size returns to where it was before a burst of clients rather
//! than staying at its peak.  glibc only; elsewhere a no-op.

/// Give freed heap memory back to the operating system.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
