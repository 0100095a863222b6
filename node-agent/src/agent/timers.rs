//! One queue for membership's timers: foca asks for many short timers (probe,
//! suspicion, gossip); instead of a task sleeping for each, the gossip loop
//! keeps them in a heap of deadlines and sleeps until the earliest.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use tokio::time::Instant;

/// Items due at deadlines, earliest first (ties in the order pushed).
#[derive(Debug)]
pub(super) struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    pushed: u64,
}

#[derive(Debug)]
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl<T> TimerQueue<T> {
    /// An empty queue.
    pub(super) fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            pushed: 0,
        }
    }

    /// Queues `item` to be due at `at`.
    pub(super) fn push(&mut self, at: Instant, item: T) {
        self.pushed += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.pushed,
            item,
        }));
    }

    /// When the earliest item is due.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Takes every item due at `now`, earliest first.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<T> {
        let mut due = Vec::new();
        while self.next_deadline().is_some_and(|at| at <= now) {
            let Some(Reverse(e)) = self.heap.pop() else {
                break;
            };
            due.push(e.item);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn due_items_come_out_in_deadline_then_push_order() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut q = TimerQueue::new();
        assert_eq!(q.next_deadline(), None);
        q.push(ms(30), "c");
        q.push(ms(10), "a");
        q.push(ms(20), "b1");
        q.push(ms(20), "b2");
        assert_eq!(q.next_deadline(), Some(ms(10)));
        assert!(q.take_due(ms(5)).is_empty());
        assert_eq!(q.take_due(ms(20)), vec!["a", "b1", "b2"]);
        assert_eq!(q.next_deadline(), Some(ms(30)));
        assert_eq!(q.take_due(ms(100)), vec!["c"]);
        assert_eq!(q.next_deadline(), None);
    }
}
