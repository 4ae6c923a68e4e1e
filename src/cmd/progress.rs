//! Hashing progress on stderr: a live bar on a terminal, a plain line every
//! few seconds for CI logs, or nothing.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use vmcast_gen::hash::Progress;
use vmcast_gen::units::human_size;

/// How hashing progress is shown.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Nothing,
    /// A live bar on a terminal.
    Bar,
    /// A plain line every few seconds, for CI logs.
    Lines,
}

/// Hashing progress on stderr: bytes, rate, ETA and files.
pub struct Bar {
    bar: ProgressBar,
    show: Show,
    files: AtomicUsize,
    done: AtomicUsize,
    started: Instant,
    /// Milliseconds since `started` of the last printed line.
    last_line: AtomicU64,
}

impl Bar {
    pub fn new(show: Show) -> Self {
        let target = if show == Show::Bar {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(0), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} hashing {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} [{wide_bar}] {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        Bar {
            bar,
            show,
            files: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            started: Instant::now(),
            last_line: AtomicU64::new(0),
        }
    }

    fn line(&self) {
        let (pos, len) = (self.bar.position(), self.bar.length().unwrap_or(0));
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprintln!(
            "hashing: {} of {} ({:.0}%), {:.2} GB/s, {}/{} files",
            human_size(pos),
            human_size(len),
            if len > 0 {
                pos as f64 * 100.0 / len as f64
            } else {
                100.0
            },
            pos as f64 / secs / 1e9,
            self.done.load(Ordering::Relaxed),
            self.files.load(Ordering::Relaxed)
        );
    }
}

impl Progress for Bar {
    fn begin(&self, files: usize, bytes: u64) {
        self.files.store(files, Ordering::Relaxed);
        self.bar.set_length(bytes);
        self.bar.set_message(format!("0/{files} files"));
    }

    fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
        if self.show == Show::Lines {
            let now = self.started.elapsed().as_millis() as u64;
            let last = self.last_line.load(Ordering::Relaxed);
            if now >= last + 5_000
                && self
                    .last_line
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                self.line();
            }
        }
    }

    fn file_done(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        let files = self.files.load(Ordering::Relaxed);
        self.bar.set_message(format!("{done}/{files} files"));
    }

    fn end(&self) {
        if self.show == Show::Lines && self.files.load(Ordering::Relaxed) > 0 {
            self.line();
        }
        self.bar.finish_and_clear();
    }
}
