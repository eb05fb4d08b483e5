//! Progress of transfers over a few MB: a bar on stderr when it is a terminal, log lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Transfers smaller than this report nothing.
pub const THRESHOLD: u64 = 4 << 20;

/// The progress of one transfer.
pub(crate) struct Progress {
    label: String,
    total: u64,
    state: Mutex<(u64, u64)>,
    terminal: bool,
    enabled: bool,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

impl Progress {
    /// Progress of `total` bytes labelled `label` (`pull 127.0.0.1:5000/team/redact`), reported
    /// only when `enabled` and the transfer is over [`THRESHOLD`].
    pub(crate) fn new(label: String, total: u64, enabled: bool) -> Self {
        Self {
            label,
            total,
            state: Mutex::new((0, 0)),
            terminal: std::io::stderr().is_terminal(),
            enabled: enabled && total > THRESHOLD,
        }
    }

    /// Records `bytes` more transferred.
    pub(crate) fn advance(&self, bytes: u64) {
        if !self.enabled {
            return;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.0 += bytes;
        let percent = (state.0.saturating_mul(100) / self.total.max(1)).min(100);
        if self.terminal {
            if percent != state.1 || state.0 == bytes {
                state.1 = percent;
                let filled = (percent / 5) as usize;
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r{} [{}{}] {percent:>3}% {:.1}/{:.1} MiB",
                    self.label,
                    "#".repeat(filled),
                    " ".repeat(20 - filled),
                    mib(state.0),
                    mib(self.total)
                );
                if state.0 >= self.total {
                    let _ = writeln!(err);
                }
                let _ = err.flush();
            }
        } else if percent / 25 != state.1 / 25 || state.0 == bytes {
            state.1 = percent;
            tracing::info!(
                transfer = %self.label,
                percent,
                done_mib = format!("{:.1}", mib(state.0)),
                total_mib = format!("{:.1}", mib(self.total)),
                "transfer progress"
            );
        }
    }
}
