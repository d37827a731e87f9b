//! How the C allocator (glibc's malloc, which Rust uses by default) hands
//! large blocks back to the system.
//!
//! glibc serves a block of 128 KiB or more straight from the system and
//! returns it when freed, but after the first such free it raises that
//! threshold to the block's size (up to 32 MiB), and from then on such
//! blocks come from its arenas and stay there when freed. A password hash
//! takes 19 MiB and a history answer a few MiB, on whatever thread runs
//! them: a burst of logins left a node at 1.5 GB resident with nothing in
//! use. A fixed threshold keeps large blocks going back to the system.

/// Blocks this large and larger are taken from the system and given back when freed.
const LARGE_BLOCK: i32 = 256 * 1024;

/// Fixes the threshold at [`LARGE_BLOCK`] (glibc only; elsewhere nothing to do).
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's settings; it is called
    // once at start-up, before any other thread exists.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK) == 0 {
            eprintln!("could not set the allocator's large-block threshold");
        }
    }
}
