//! The build's fixed costs in parallel: reading a thousand release notes,
//! rendering and signing a hundred archive documents. On a warm rebuild,
//! where no image is read, they are most of the time, and they are as
//! independent as the hashing of images is.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One thread per core, the default of `build -j`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `items.iter().map(f).collect()` on up to `threads` threads. The results
/// come in the order of the items, whichever thread made them, so what
/// follows (the first error reported, the bytes written) does not depend
/// on scheduling. Items are handed out one at a time: a slow one does not
/// hold up a whole share.
pub fn map<T, R, F>(threads: usize, items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let threads = threads.min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let results: Vec<Mutex<Option<R>>> = items.iter().map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let result = f(item);
                    *results[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|slot| {
            slot.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every item was mapped: a panic in a worker propagates from scope")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_order_of_the_items() {
        let items: Vec<u64> = (0..1000).collect();
        for threads in [1, 2, 7, 2000] {
            let squares = map(threads, &items, |n| n * n);
            assert_eq!(squares, items.iter().map(|n| n * n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn maps_nothing_to_nothing() {
        assert!(map(4, &[] as &[u8], |_| 0).is_empty());
    }
}
