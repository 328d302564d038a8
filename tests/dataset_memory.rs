//! An epoch over a dataset larger than memory: a generator makes 2 GiB of batches (2,048 of
//! 1 MiB), `fit_dataset` trains on them through a prefetch thread, and the process never
//! holds more than a few batches. Two measures, both by construction rather than by timing:
//! the generator counts the batches made and a callback those consumed, so the batches in
//! flight are bounded; and a counting global allocator (this test binary's own, hence the
//! file) bounds the live heap.

use kiln::data::Dataset;
use kiln::nn::*;
use kiln::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The system allocator, counting live bytes and their peak.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const ROWS: usize = 256;
const FEATURES: usize = 1024; // 256 x 1024 f32 = 1 MiB per batch
const BATCHES: usize = 2048; // 2 GiB per epoch

#[test]
fn an_epoch_larger_than_memory_streams_in_bounded_memory() {
    let made = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let (m2, c2, f2) = (made.clone(), consumed.clone(), max_in_flight.clone());
    let data = Dataset::from_generator(move || {
        let (made, consumed, flight) = (m2.clone(), c2.clone(), f2.clone());
        (0..BATCHES).map(move |b| {
            let k = made.fetch_add(1, Ordering::SeqCst) + 1;
            flight.fetch_max(k - consumed.load(Ordering::SeqCst), Ordering::SeqCst);
            // y = mean of the features, so the model has something to learn.
            let x: Vec<f32> = (0..ROWS * FEATURES)
                .map(|i| (((i + b) * 2_654_435_761usize) % 1000) as f32 / 1000.0)
                .collect();
            let y: Vec<f32> = x
                .chunks(FEATURES)
                .map(|r| r.iter().sum::<f32>() / FEATURES as f32)
                .collect();
            Ok((Array::new([ROWS, FEATURES], x)?, Array::new([ROWS, 1], y)?))
        })
    })
    .prefetch(2);

    struct Consumed(Arc<AtomicUsize>);
    impl Callback for Consumed {
        fn on_batch_end(
            &mut self,
            _: usize,
            _: usize,
            _: &Logs,
            _: &mut Model,
        ) -> kiln::Result<Control> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(Control::Continue)
        }
    }

    let mut model = Sequential::new([Input::new([FEATURES]).into(), Dense::new(1).into()]);
    model
        .compile(Sgd::new(1e-4), Loss::MeanSquaredError, &[])
        .unwrap();
    model.build().unwrap();
    let before = LIVE.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let h = model
        .fit_dataset(
            &data,
            FitConfig::new()
                .verbosity(Verbosity::Silent)
                .callback(Consumed(consumed.clone())),
        )
        .unwrap();
    assert_eq!(made.load(Ordering::SeqCst), BATCHES);
    assert_eq!(consumed.load(Ordering::SeqCst), BATCHES);
    // Made but not yet consumed: the queue (2), the one being sent, the one being fed.
    let flight = max_in_flight.load(Ordering::SeqCst);
    assert!(flight <= 2 + 2, "{flight} batches in flight");
    // The heap grew by far less than the epoch's 2 GiB: a few batches, the compiled step
    // and its buffers (generously 64 MiB; an epoch held in memory would be 2,048 MiB).
    let peak = PEAK.load(Ordering::SeqCst) - before;
    assert!(peak < 64 << 20, "peak heap growth {} MiB", peak >> 20);
    let loss = h.get("loss").unwrap()[0];
    assert!(loss.is_finite(), "{loss}");
}
