//! The one worker pool: the hashing of images, and the build's fixed costs
//! (reading a thousand release notes, rendering and signing a hundred
//! archive documents), which on a warm rebuild, where no image is read,
//! are most of the time.
//!
//! Items are handed out one at a time from a shared index, so a slow one
//! does not hold up a whole share, in the items' order or in one the caller
//! chooses (largest first). Whatever the order and the scheduling, results
//! come back in the order of the items, and the error reported is that of
//! the earliest item in that order, so what follows (the message, the
//! bytes written) does not depend on which thread got there first.

use std::convert::Infallible;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One thread per core, the default of `build -j` and `hash -j`.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Frees `value` on a thread of its own, not waited for: a site's worth
/// of releases, or the hash cache's maps, take milliseconds to free that
/// the build need not spend on its one busy core. A process that exits
/// first frees it all at once; if no thread can be started, it is freed
/// here.
pub fn drop_aside<T: Send + 'static>(value: T) {
    // A failed spawn drops the closure, and the value with it, here.
    let _ = std::thread::Builder::new()
        .name("drop".to_owned())
        .spawn(move || drop(value));
}

/// The order in which items are handed to the threads. Results come back
/// in the items' order whatever it is.
#[derive(Debug, Clone)]
pub struct Order(Option<Vec<usize>>);

impl Order {
    /// The items' own order.
    pub const INPUT: Order = Order(None);

    /// The largest `key` first, ties in the items' order: the longest work
    /// starts first, so no long item starts last and runs alone.
    pub fn largest_first<T, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Order {
        let mut order: Vec<usize> = (0..items.len()).collect();
        // Stable: equal keys keep the items' order.
        order.sort_by(|&a, &b| key(&items[b]).cmp(&key(&items[a])));
        Order(Some(order))
    }

    /// The index of the `n`th item handed out, of `len`.
    fn nth(&self, n: usize, len: usize) -> Option<usize> {
        match &self.0 {
            None => (n < len).then_some(n),
            Some(order) => order.get(n).copied(),
        }
    }
}

/// Raised when an item fails: no other item starts, and one under way may
/// look at [`Stop::raised`] and give up.
#[derive(Debug, Default)]
pub struct Stop(AtomicBool);

impl Stop {
    /// Whether an item has failed.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn raise(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `items.iter().map(f).collect()` on up to `threads` threads, in the
/// items' order.
pub fn map<T, R, F>(threads: usize, items: &[T], f: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    let mapped = try_map(
        threads,
        items,
        &Order::INPUT,
        || (),
        |(), item, _| Ok::<_, Infallible>(Some(f(item))),
    );
    match mapped {
        Ok(results) => results,
        Err(never) => match never {},
    }
}

/// Maps every item with `f` on up to `threads` threads, handing them out
/// in `order`; returns the results in the items' order.
///
/// Each thread makes its state with `state` when it takes its first item
/// and hands it to `f` for every item it takes (a read buffer, made once
/// per thread rather than per item). Once an item fails, no other starts,
/// and `f` may give up an item under way when `stop` is raised by
/// returning `Ok(None)`, and only then. The error returned is that of the
/// earliest item, in the items' order, of those that failed.
pub fn try_map<T, S, R, E>(
    threads: usize,
    items: &[T],
    order: &Order,
    state: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, &T, &Stop) -> Result<Option<R>, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let next = AtomicUsize::new(0);
    let stop = Stop::default();
    let slots: Vec<Mutex<Option<Result<R, E>>>> = items.iter().map(|_| Mutex::new(None)).collect();
    let work = || {
        let mut own = None;
        while !stop.raised() {
            let Some(index) = order.nth(next.fetch_add(1, Ordering::Relaxed), items.len()) else {
                break;
            };
            let own = own.get_or_insert_with(&state);
            let result = match f(own, &items[index], &stop) {
                Ok(Some(result)) => Ok(result),
                // Given up: another item failed, and its error is the one to report.
                Ok(None) => break,
                Err(e) => {
                    stop.raise();
                    Err(e)
                }
            };
            *slots[index].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        }
    };
    match threads.min(items.len()) {
        0 | 1 => work(),
        threads => std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(work);
            }
        }),
    }
    let mut results = Vec::with_capacity(items.len());
    for slot in slots {
        match slot.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(result)) => results.push(result),
            Some(Err(e)) => return Err(e),
            None => assert!(
                stop.raised(),
                "every item was mapped: a panic in a worker propagates from scope, and only a \
                 failure stops the others"
            ),
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

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

    #[test]
    fn hands_out_largest_first_and_answers_in_the_items_order() {
        let items = [3u64, 9, 1, 9, 5];
        let order = Order::largest_first(&items, |&n| n);
        let started = Mutex::new(Vec::new());
        let results = try_map(
            1,
            &items,
            &order,
            || (),
            |(), &n, _| {
                started.lock().unwrap().push(n);
                Ok::<_, ()>(Some(n * 10))
            },
        );
        assert_eq!(started.into_inner().unwrap(), [9, 9, 5, 3, 1]);
        assert_eq!(results, Ok(vec![30, 90, 10, 90, 50]));
        // Ties keep the items' order.
        assert_eq!(order.0, Some(vec![1, 3, 4, 0, 2]));
    }

    /// Spins until `done` (at most 30 s).
    fn wait_until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "waited 30 s");
            std::thread::yield_now();
        }
    }

    #[test]
    fn the_earliest_item_s_error_wins_whoever_failed_first() {
        for order in [Order::INPUT, Order::largest_first(&[0, 1], |&n| n)] {
            // Both items start, then item 1 fails, then item 0.
            let started = AtomicUsize::new(0);
            let result = try_map(
                2,
                &[0, 1],
                &order,
                || (),
                |(), &n, stop| {
                    started.fetch_add(1, Ordering::Relaxed);
                    wait_until(|| started.load(Ordering::Relaxed) == 2);
                    if n == 0 {
                        wait_until(|| stop.raised());
                    }
                    Err::<Option<()>, _>(format!("item {n} failed"))
                },
            );
            assert_eq!(result, Err("item 0 failed".to_string()));
        }
    }

    #[test]
    fn a_failure_stops_the_other_items() {
        let items: Vec<usize> = (0..1000).collect();
        let started = AtomicUsize::new(0);
        let gave_up = AtomicBool::new(false);
        let result = try_map(
            2,
            &items,
            &Order::INPUT,
            || (),
            |(), &n, stop| {
                started.fetch_add(1, Ordering::Relaxed);
                match n {
                    // Under way when item 1 fails: it gives up.
                    0 => {
                        wait_until(|| stop.raised());
                        gave_up.store(true, Ordering::Relaxed);
                        Ok(None)
                    }
                    1 => Err("item 1 failed"),
                    _ => Ok(Some(n)),
                }
            },
        );
        assert_eq!(result, Err("item 1 failed"));
        assert!(gave_up.load(Ordering::Relaxed));
        // Item 0 held one thread until the stop: the other took item 1
        // and nothing after it.
        assert_eq!(started.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn each_thread_makes_its_state_once_and_keeps_it() {
        let items: Vec<usize> = (0..500).collect();
        let made = AtomicUsize::new(0);
        for threads in [1, 3] {
            made.store(0, Ordering::Relaxed);
            // Each result says which state served it and how many items
            // that state had served before.
            let served = try_map(
                threads,
                &items,
                &Order::INPUT,
                || (made.fetch_add(1, Ordering::Relaxed), 0usize),
                |(id, count), _, _| {
                    *count += 1;
                    Ok::<_, ()>(Some((*id, *count)))
                },
            )
            .unwrap();
            let states = made.load(Ordering::Relaxed);
            assert!((1..=threads).contains(&states), "{states} states");
            for id in 0..states {
                let counts: Vec<usize> = served
                    .iter()
                    .filter(|(i, _)| *i == id)
                    .map(|(_, c)| *c)
                    .collect();
                let mut sorted = counts.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (1..=counts.len()).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn no_state_is_made_for_no_items() {
        let made = AtomicUsize::new(0);
        let result = try_map(
            4,
            &[] as &[u8],
            &Order::INPUT,
            || made.fetch_add(1, Ordering::Relaxed),
            |_, _, _| Ok::<Option<()>, ()>(None),
        );
        assert_eq!(result, Ok(Vec::new()));
        assert_eq!(made.load(Ordering::Relaxed), 0);
    }
}
