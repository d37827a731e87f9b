//! How the C allocator (glibc's malloc, which Rust uses by default) hands
//! memory back to the system.
//!
//! **Large blocks.** glibc serves a block of 128 KiB or more straight from
//! the system and returns it when freed, but after the first such free it
//! raises that threshold to the block's size (up to 32 MiB), and from then
//! on such blocks come from its arenas and stay there when freed. A
//! password hash takes 19 MiB and a history answer a few MiB, on whatever
//! thread runs them: a burst of logins left a node at 1.5 GB resident with
//! nothing in use. A fixed threshold keeps large blocks going back to the
//! system.
//!
//! **Small blocks.** An arena gives memory back on its own only from its
//! top end; free pages between blocks still in use stay resident. After a
//! burst of connections (8,000 sending request bodies) a node stayed at
//! 256 MB with all of them gone. A thread of its own asks glibc every
//! `--memory-trim-secs` to hand every free page back (`malloc_trim`): 50 MB
//! after the same burst. A trim with little to hand back takes tens of
//! microseconds; one after a burst, tens of milliseconds, during which
//! threads allocating from the arena it is trimming wait.

use std::time::Duration;

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

/// Hands the arenas' free pages back to the system every `every`, from a
/// thread of its own (glibc only; zero, or elsewhere: nothing).
pub fn trim_every(every: Duration) -> std::io::Result<()> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if !every.is_zero() {
        std::thread::Builder::new()
            .name("parley-trim".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let started = std::time::Instant::now();
                // SAFETY: malloc_trim only gives free memory back; it takes
                // each arena's lock while it works on it.
                let gave_back = unsafe { libc::malloc_trim(0) } == 1;
                tracing::debug!(gave_back, took = ?started.elapsed(), "allocator trimmed");
            })?;
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = every;
    Ok(())
}
