//! A counter: one atomic, exact under any concurrency.

use std::sync::atomic::{AtomicU64, Ordering};

use metrics::CounterFn;

/// The storage behind one counter series.
#[derive(Debug, Default)]
pub(crate) struct CounterCell {
    value: AtomicU64,
}

impl CounterCell {
    pub fn get(&self) -> u64 {
        // Acquire, paired with the Release of the updates: see `Store::snapshot` on why the
        // order in which a snapshot reads its families matters.
        self.value.load(Ordering::Acquire)
    }
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Release);
    }

    fn absolute(&self, value: u64) {
        // A counter never goes down, whatever a caller asks.
        self.value.fetch_max(value, Ordering::Release);
    }
}
