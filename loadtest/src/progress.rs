//! Progress bars on stderr while a run goes on; hidden when stderr is not a
//! terminal (indicatif's own check) or when asked to be quiet.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Makes progress bars, or hidden ones.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    enabled: bool,
}

impl Progress {
    /// Bars are drawn only if `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Self {
        Progress { enabled }
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.enabled {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }

    /// A bar counting to `len`, prefixed with `name`.
    pub fn bar(&self, name: &'static str, len: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(len), self.target()).with_prefix(name);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {bar:30} {pos}/{len} {per_sec} {msg}",
        ) {
            bar.set_style(style);
        }
        bar
    }

    /// A bar over the seconds of the run; the message shows live rates.
    pub fn clock(&self, name: &'static str, seconds: u64) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(seconds), self.target()).with_prefix(name);
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:>10} [{elapsed_precise}] {bar:30} {pos}/{len}s {msg}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(500));
        bar
    }
}
