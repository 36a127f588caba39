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
        self.value.load(Ordering::Relaxed)
    }
}

impl CounterFn for CounterCell {
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        // A counter never goes down, whatever a caller asks.
        self.value.fetch_max(value, Ordering::Relaxed);
    }
}
