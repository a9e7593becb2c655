//! The Tokio runtime, shared by the gate's `main` and the benchmark floor.

use std::io;

use tokio::runtime::{Builder, Runtime};

/// A current-thread runtime when the process may use one core (a pod limited to one CPU, or
/// `taskset -c 0`), else one worker per allowed core. On one core a multi-thread runtime
/// only adds cross-thread wake-ups: its single worker hands each woken task the LIFO slot,
/// so a task that queues a Redis command wakes the connection's writer at once and every
/// command goes out in its own write.
pub fn for_allowed_cores() -> io::Result<Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cores == 1 {
        Builder::new_current_thread()
    } else {
        Builder::new_multi_thread()
    };
    builder.enable_all().build()
}
