//! The audit log: one JSON line per decision, written straight to its writer.

use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::fmt::MakeWriter;

/// Where audit lines go, set once by [`super::init`]; until then (and in processes that install
/// no telemetry) lines are dropped.
type AuditSink = Box<dyn Fn(&[u8]) + Send + Sync>;
static AUDIT: std::sync::OnceLock<AuditSink> = std::sync::OnceLock::new();

/// Writes one audit line, with its newline, in one write (so lines from concurrent checks
/// never interleave). Straight to the writer rather than as a `tracing` event: the dispatch
/// and a layer's copy of the line cost more than rendering it (callgrind).
pub fn write_audit_line(line: &[u8]) {
    if let Some(write) = AUDIT.get() {
        write(line);
    }
}

/// Sends audit lines to `writer` from now on. Set once, as the subscriber is: a second
/// [`super::init`] has already failed before it gets here.
pub(super) fn install<A>(writer: A)
where
    A: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let _ = AUDIT.set(Box::new(move |line| {
        let _ = std::io::Write::write_all(&mut writer.make_writer(), line);
    }));
}

/// Standard output through a writer thread, so a Check never waits on the pipe. Lossless:
/// under back-pressure checks wait rather than drop lines. Buffered: the thread flushes after
/// each batch it drains, so a busy gate makes one write per batch instead of one per line,
/// and an idle one still writes each line at once. Dropping the guard writes out the rest.
pub(super) fn to_stdout() -> (NonBlocking, WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ))
}
