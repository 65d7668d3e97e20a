//! A percentage line on stderr for long operations, shown only when stderr
//! is a terminal.

use std::io::{IsTerminal, Write};

/// Progress of `total` units of work.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    shown: Option<u64>,
    on: bool,
}

impl Progress {
    /// Starts showing `label` (if stderr is a terminal).
    pub fn new(label: impl Into<String>, total: u64) -> Progress {
        let mut p = Progress {
            label: label.into(),
            total,
            done: 0,
            shown: None,
            on: std::io::stderr().is_terminal(),
        };
        p.draw();
        p
    }

    /// `n` more units done.
    pub fn add(&mut self, n: u64) {
        self.done = self.done.saturating_add(n).min(self.total);
        self.draw();
    }

    fn percent(&self) -> u64 {
        if self.total == 0 {
            100
        } else {
            (self.done as u128 * 100 / self.total as u128) as u64
        }
    }

    fn draw(&mut self) {
        if !self.on {
            return;
        }
        let pct = self.percent();
        if self.shown == Some(pct) {
            return;
        }
        self.shown = Some(pct);
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r{}: {pct:3}%", self.label);
        let _ = e.flush();
    }

    /// `done` units done in all.
    pub fn set(&mut self, done: u64) {
        self.done = done.min(self.total);
        self.draw();
    }

    /// Ends the line.
    pub fn finish(mut self) {
        self.clear();
    }

    fn clear(&mut self) {
        if self.on {
            self.on = false;
            let _ = writeln!(std::io::stderr());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
