//! Free 127.0.0.1 ports for node processes this process is about to start.
//!
//! The usual trick (bind port 0, read the number, close, hand it to a child)
//! leaves a window between the close and the child's own bind. In that
//! window the kernel may give the very same port to any outgoing connection
//! on the machine as its *source* port, because port 0 and source ports come
//! from the same ephemeral range. Under load, with thousands of client
//! sockets opening, that happens, and the child fails to bind and exits.
//! A cluster makes the window long: every node's cluster port is chosen up
//! front, to list them all as seeds, before the first node starts.
//!
//! So the ports handed out here come from *below* the kernel's ephemeral
//! range, which it never picks on its own. Each one is checked free with a
//! bind, and then held with a lock file for the rest of this process's life,
//! so that two processes choosing ports at once (test binaries run side by
//! side) cannot both take it. Where the ephemeral range leaves no room below
//! it, the kernel's port 0 is the fallback.
//!
//! This file is shared, by `#[path]`, with the node's integration tests, so
//! its tests live with its harness user, in `nodeproc.rs`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// The lowest port handed out: well clear of the well-known services.
const LOWEST: u16 = 10_000;

/// Ports this process has handed out, each with the lock file that holds it.
static TAKEN: Mutex<Option<HashMap<u16, File>>> = Mutex::new(None);

/// A 127.0.0.1 port that is free now and that nothing else will take before
/// the caller's child binds it (see the module docs). Where that cannot be
/// arranged (no room below the ephemeral range, no usable lock directory),
/// the kernel's port 0, as before.
pub fn free_port() -> io::Result<u16> {
    let Some((low, high)) = below_ephemeral_range() else {
        return kernel_port();
    };
    let span = u32::from(high - low) + 1;
    let start = scatter_seed() % span;
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let taken = taken.get_or_insert_with(HashMap::new);
    // Without a lock directory we can use (another user's, a read-only
    // /tmp), the kernel's choice is still better than no port.
    let Ok(dir) = lock_dir() else {
        return kernel_port();
    };
    for step in 0..span {
        // `span` fits the u16 range, so the sum stays a valid port.
        let port = low + ((start + step) % span) as u16;
        if taken.contains_key(&port) || TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{port}.lock")))
        else {
            return kernel_port();
        };
        if file.try_lock().is_ok() {
            taken.insert(port, file);
            return Ok(port);
        }
    }
    kernel_port()
}

/// The ports between [`LOWEST`] and the start of the kernel's ephemeral
/// range, if there are enough of them to choose from.
pub(crate) fn below_ephemeral_range() -> Option<(u16, u16)> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let ephemeral_low: u16 = range.split_whitespace().next()?.parse().ok()?;
    let high = ephemeral_low.checked_sub(1)?;
    (high >= LOWEST + 1_000).then_some((LOWEST, high))
}

/// Where the lock files live; shared by every process on the machine.
pub(crate) fn lock_dir() -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join("parley-test-ports");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A starting point that differs between processes, so that two of them do
/// not walk the range in step.
fn scatter_seed() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id().wrapping_mul(2_654_435_761)) ^ nanos
}

/// The kernel's choice: port 0, read back.
fn kernel_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
