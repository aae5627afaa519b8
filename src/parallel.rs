//! A small thread pool for concurrent Vault reads and Kubernetes writes (the
//! synchronizer's sinks, the env wrapper's reads):
//! scoped threads, at most [`WORKERS`] at a time, results in input order.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Concurrent Vault reads and Kubernetes writes.
pub const WORKERS: usize = 8;
/// Concurrent writes of large secrets (over 256 KiB, or read again from
/// Vault): each holds a Vault answer, its data and the request body, up to
/// about 5 MiB.
pub const LARGE_WORKERS: usize = 3;

/// Runs `f` on every item with at most [`WORKERS`] threads; results in order.
pub fn parallel<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    parallel_n(items, WORKERS, f)
}

/// Runs `f` on every item with at most `workers` threads; results in order.
pub fn parallel_n<T: Sync, R: Send>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(item);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item processed"))
        .collect()
}
