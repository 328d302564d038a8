//! `kiln::data::Dataset`: its stages (map, shuffle, batch, prefetch, repeat, take), errors
//! and panics reaching the consumer, dropping an iteration early, and `fit_dataset`,
//! `evaluate_dataset` and `predict_dataset` against their array forms.

use kiln::data::{Dataset, Item};
use kiln::nn::*;
use kiln::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// `n` rows of 3 features and an `i32` class in 0..3 (a deterministic mix).
fn rows(n: usize) -> (Array, Array) {
    let x: Vec<f32> = (0..n * 3)
        .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
        .collect();
    let y: Vec<i32> = (0..n).map(|i| (i * 7 % 3) as i32).collect();
    (Array::new([n, 3], x).unwrap(), Array::new([n], y).unwrap())
}

fn scalars(ds: &Dataset, epoch: u64) -> Vec<f32> {
    ds.iter_epoch(epoch)
        .map(|i| i.unwrap().x[0].scalar_value::<f32>().unwrap())
        .collect()
}

fn counting(n: usize) -> Dataset {
    let x = Array::new([n], (0..n).map(|v| v as f32).collect::<Vec<_>>()).unwrap();
    Dataset::from_slices(x).unwrap()
}

#[test]
fn batch_keeps_or_drops_the_partial_batch_and_stacks_every_array() {
    let (x, y) = rows(7);
    let w = Array::new([7], vec![0.5f32; 7]).unwrap();
    let ds = Dataset::from_slices((x.clone(), y.clone(), w)).unwrap();
    assert_eq!(ds.len(), Some(7));
    let b: Vec<Item> = ds.batch(3).iter().map(|i| i.unwrap()).collect();
    assert_eq!(ds.batch(3).len(), Some(3));
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].x[0].shape(), &[3, 3]);
    assert_eq!(b[2].x[0].shape(), &[1, 3]);
    assert_eq!(b[2].y.as_ref().unwrap().shape(), &[1]);
    assert_eq!(b[1].sample_weight.as_ref().unwrap().shape(), &[3]);
    // The rows come back in order, bit for bit.
    assert_eq!(b[1].x[0], kiln::data::take_rows(&x, &[3, 4, 5]).unwrap());
    assert_eq!(
        b[2].y.clone().unwrap(),
        kiln::data::take_rows(&y, &[6]).unwrap()
    );
    let d = ds.batch_drop_remainder(3);
    assert_eq!(d.len(), Some(2));
    assert_eq!(d.iter().count(), 2);
    // A batch of 0 is one clear error.
    let e: Vec<_> = ds.batch(0).iter().collect();
    assert_eq!(e.len(), 1);
    assert!(e[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("at least 1"));
}

#[test]
fn batch_refuses_items_of_different_shapes_naming_them() {
    let ds = Dataset::from_generator(|| (1..4).map(|n| Array::new([n], vec![0f32; n])));
    let e = ds.batch(3).iter().next().unwrap().unwrap_err().to_string();
    assert!(e.contains("item 1 of a batch has x f32[2]"), "{e}");
    assert!(e.contains("item 0 has f32[1]"), "{e}");
}

#[test]
fn from_slices_checks_rows() {
    let (x, _) = rows(4);
    let e = Dataset::from_arrays(x, Array::new([3], vec![0i32; 3]).unwrap()).unwrap_err();
    assert!(e.to_string().contains("x has 4 rows but y has 3"), "{e}");
    let e = Dataset::from_slices(Array::scalar(1f32)).unwrap_err();
    assert!(e.to_string().contains("scalar"), "{e}");
}

#[test]
fn shuffle_is_seeded_per_epoch_and_a_small_buffer_mixes_locally() {
    let ds = counting(50).shuffle(50, 3);
    let (a, b) = (scalars(&ds, 0), scalars(&ds, 1));
    assert_eq!(a, scalars(&ds, 0));
    assert_ne!(a, b);
    let mut s = a.clone();
    s.sort_by(f32::total_cmp);
    assert_eq!(s, (0..50).map(|v| v as f32).collect::<Vec<_>>());
    assert_ne!(a, scalars(&counting(50).shuffle(50, 4), 0));
    // With a buffer of 5, the k-th item given comes from the first k + 5 of the input.
    let local = scalars(&counting(200).shuffle(5, 9), 0);
    for (k, v) in local.iter().enumerate() {
        assert!((*v as usize) < k + 5, "item {k} is {v}");
    }
    assert_ne!(local, (0..200).map(|v| v as f32).collect::<Vec<_>>());
    // A buffer of 1 keeps the order.
    assert_eq!(
        scalars(&counting(9).shuffle(1, 1), 0),
        scalars(&counting(9), 0)
    );
}

#[test]
fn repeat_take_and_map_compose_and_keep_lengths() {
    let ds = counting(4).repeat(3);
    assert_eq!(ds.len(), Some(12));
    assert_eq!(
        scalars(&ds, 0),
        [0., 1., 2., 3., 0., 1., 2., 3., 0., 1., 2., 3.]
    );
    // A shuffle before repeat gives each repetition its own order.
    let r = scalars(&counting(20).shuffle(20, 1).repeat(2), 0);
    assert_ne!(r[..20], r[20..]);
    let t = counting(10).take(3);
    assert_eq!((t.len(), scalars(&t, 0)), (Some(3), vec![0., 1., 2.]));
    let m = counting(3).map(|mut it| {
        let v = it.x[0].scalar_value::<f32>()?;
        it.x[0] = Array::scalar(v * 10.0);
        Ok(it)
    });
    assert_eq!((m.len(), scalars(&m, 0)), (Some(3), vec![0., 10., 20.]));
}

#[test]
fn from_iter_runs_once_and_says_so() {
    let ds = Dataset::from_iter((0..3).map(|v| Ok(Array::scalar(v as f32))));
    assert_eq!(scalars(&ds, 0), [0., 1., 2.]);
    let again: Vec<_> = ds.iter().collect();
    assert_eq!(again.len(), 1);
    let e = again[0].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("runs once") && e.contains("from_generator"),
        "{e}"
    );
}

#[test]
fn errors_reach_the_consumer_through_every_stage_and_the_prefetch_thread() {
    let ds = Dataset::from_generator(|| {
        (0..10).map(|i| {
            if i == 6 {
                Err(kiln::Error::invalid("generator: item 6 is unreadable"))
            } else {
                Ok(Array::scalar(i as f32))
            }
        })
    });
    for stage in [
        ds.clone(),
        ds.prefetch(2),
        ds.map(Ok).prefetch(1).prefetch(3),
        ds.shuffle(3, 1).prefetch(2),
    ] {
        let items: Vec<_> = stage.iter().collect();
        let errs: Vec<String> = items
            .iter()
            .filter_map(|i| i.as_ref().err().map(|e| e.to_string()))
            .collect();
        assert_eq!(errs, ["generator: item 6 is unreadable"]);
        assert_eq!(items.len(), 10);
    }
    // A map's error becomes that item's error.
    let m = counting(4).map(|it| {
        if it.x[0].scalar_value::<f32>()? == 2.0 {
            return Err(kiln::Error::invalid("map: no twos"));
        }
        Ok(it)
    });
    let r: Vec<_> = m.prefetch(2).iter().collect();
    assert!(r[2].is_err() && r[3].is_ok());
}

#[test]
fn a_panic_on_the_prefetch_thread_is_an_error_item_not_a_panic() {
    let ds = counting(5)
        .map(|it| {
            if it.x[0].scalar_value::<f32>()? == 3.0 {
                panic!("user map exploded");
            }
            Ok(it)
        })
        .prefetch(2);
    let items: Vec<_> = ds.iter().collect();
    assert_eq!(items.len(), 4); // 0, 1, 2 and the error; the thread ends there
    assert!(items[..3].iter().all(|i| i.is_ok()));
    let e = items[3].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("panicked on the prefetch thread: user map exploded"),
        "{e}"
    );
}

/// An endless generator that counts the items it made and notes when it is dropped.
fn endless(made: Arc<AtomicUsize>, dropped: Arc<AtomicBool>) -> Dataset {
    struct Guard(Arc<AtomicBool>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    Dataset::from_generator(move || {
        let guard = Guard(dropped.clone());
        let made = made.clone();
        (0..).map(move |i: u64| {
            let _ = &guard;
            made.fetch_add(1, Ordering::SeqCst);
            Ok(Array::scalar(i as f32))
        })
    })
}

#[test]
fn dropping_a_prefetched_iteration_mid_epoch_stops_and_joins_its_thread() {
    let made = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let ds = endless(made.clone(), dropped.clone()).prefetch(4);
    let mut it = ds.iter();
    for k in 0..3 {
        assert_eq!(
            it.next().unwrap().unwrap().x[0]
                .scalar_value::<f32>()
                .unwrap(),
            k as f32
        );
    }
    // The producer runs at most the queue (4) and the one it is sending ahead.
    assert!(made.load(Ordering::SeqCst) <= 3 + 4 + 1, "{made:?}");
    drop(it);
    // The drop joined the thread, which dropped the generator on its way out.
    assert!(dropped.load(Ordering::SeqCst));
    let after = made.load(Ordering::SeqCst);
    std::thread::yield_now();
    assert_eq!(made.load(Ordering::SeqCst), after);
    // Dropping before the first item, and a batched, shuffled pipeline, too.
    let dropped2 = Arc::new(AtomicBool::new(false));
    let ds = endless(Arc::new(AtomicUsize::new(0)), dropped2.clone())
        .shuffle(8, 1)
        .batch(4)
        .prefetch(2);
    drop(ds.iter());
    assert!(dropped2.load(Ordering::SeqCst));
}

fn model(lr: f32) -> Model {
    let mut m = Sequential::new([
        Input::new([3]).into(),
        Dense::new(8).relu().into(),
        Dropout::new(0.25).into(),
        Dense::new(3).into(),
    ]);
    m.compile(
        Adam::new(lr),
        Loss::SparseCategoricalCrossentropy { from_logits: true },
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

fn weights(m: &Model) -> Vec<(String, Array)> {
    m.get_weights().unwrap()
}

/// Fed the batches `fit` cuts from arrays (no shuffle), `fit_dataset` trains to the same bits;
/// validation on a dataset equals validation on arrays.
#[test]
fn fit_dataset_trains_bitwise_as_fit_on_arrays() {
    let (x, y) = rows(50);
    let (vx, vy) = rows(13);
    let mut a = model(0.01);
    let ha = a
        .fit(
            &x,
            &y,
            quiet()
                .epochs(3)
                .batch_size(8)
                .shuffle(false)
                .validation_data(&vx, &vy),
        )
        .unwrap();
    let mut b = model(0.01);
    let train = Dataset::from_arrays(x.clone(), y.clone())
        .unwrap()
        .batch(8)
        .prefetch(2);
    let val = Dataset::from_arrays(vx.clone(), vy.clone())
        .unwrap()
        .batch(8);
    let hb = b
        .fit_dataset(&train, quiet().epochs(3).validation_dataset(&val))
        .unwrap();
    assert_eq!(ha, hb);
    assert!(ha.get("val_accuracy").is_some());
    for ((na, wa), (nb, wb)) in weights(&a).iter().zip(weights(&b)) {
        assert_eq!(na, &nb);
        assert!(wa.bits_eq(&wb), "{na}");
    }
    // evaluate and predict agree with their array forms too.
    let vds = Dataset::from_arrays(vx.clone(), vy.clone())
        .unwrap()
        .batch(5);
    assert_eq!(
        b.evaluate_dataset(&vds).unwrap(),
        b.evaluate(&vx, &vy, 5).unwrap()
    );
    let p = b.predict_dataset(&vds).unwrap();
    assert!(p.bits_eq(&b.predict(&vx, 5).unwrap()));
}

#[test]
fn fit_dataset_from_a_generator_learns_and_stops_early_without_deadlock() {
    let (x, y) = rows(60);
    let (xs, ys) = (Arc::new(x.clone()), Arc::new(y.clone()));
    let gen = Dataset::from_generator(move || {
        let (xs, ys) = (xs.clone(), ys.clone());
        (0..6).map(move |b| {
            let idx: Vec<usize> = (b * 10..b * 10 + 10).collect();
            Ok((
                kiln::data::take_rows(&xs, &idx)?,
                kiln::data::take_rows(&ys, &idx)?,
            ))
        })
    })
    .prefetch(2);
    // The generator's batches are the ones fit cuts from the arrays: the same bits.
    let mut m = model(0.05);
    let h = m.fit_dataset(&gen, quiet().epochs(3)).unwrap();
    let mut a = model(0.05);
    let ha = a
        .fit(&x, &y, quiet().epochs(3).batch_size(10).shuffle(false))
        .unwrap();
    assert_eq!(h, ha);
    for ((n, wa), (_, wb)) in weights(&a).iter().zip(weights(&m)) {
        assert!(wa.bits_eq(&wb), "{n}");
    }
    // A callback stopping in the middle of an epoch drops a prefetched endless stream.
    struct StopAt(usize);
    impl Callback for StopAt {
        fn on_batch_end(
            &mut self,
            _: usize,
            step: usize,
            _: &Logs,
            _: &mut Model,
        ) -> kiln::Result<Control> {
            Ok(if step + 1 == self.0 {
                Control::Stop
            } else {
                Control::Continue
            })
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicUsize::new(0));
    let (x1, y1) = (x.clone(), y.clone());
    let endless_batches = endless(made, dropped.clone())
        .map(move |_| {
            let (xb, yb) = (
                kiln::data::take_rows(&x1, &[0, 1])?,
                kiln::data::take_rows(&y1, &[0, 1])?,
            );
            Ok(Item::from((xb, yb)))
        })
        .prefetch(3);
    let h = m
        .fit_dataset(&endless_batches, quiet().epochs(5).callback(StopAt(7)))
        .unwrap();
    assert_eq!(h.stopped_epoch, Some(0));
    assert!(dropped.load(Ordering::SeqCst));
}

/// A dataset of one batch `(x, y)`, or `x` alone.
fn one_batch(x: Array, y: Option<Array>) -> Dataset {
    Dataset::from_generator(move || {
        let item = Item {
            x: vec![x.clone()],
            y: y.clone(),
            sample_weight: None,
        };
        [Ok::<_, kiln::Error>(item)]
    })
}

#[test]
fn fit_dataset_errors_name_the_batch_and_what_to_do() {
    let (x, y) = rows(12);
    let mut m = model(0.01);
    let unbatched = Dataset::from_arrays(x.clone(), y.clone()).unwrap();
    let e = m.fit_dataset(&unbatched, quiet()).unwrap_err().to_string();
    assert!(e.contains("call .batch(n)"), "{e}");
    let e = m.evaluate_dataset(&unbatched).unwrap_err().to_string();
    assert!(e.contains("call .batch(n)"), "{e}");
    // A generator's error stops training with that error.
    let failing = Dataset::from_generator(move || {
        let (x, y) = (x.clone(), y.clone());
        (0..3).map(move |b| {
            if b == 2 {
                return Err(kiln::Error::invalid("disk read failed at batch 3"));
            }
            Ok((x.clone(), y.clone()))
        })
    });
    let e = m.fit_dataset(&failing, quiet()).unwrap_err().to_string();
    assert_eq!(e, "disk read failed at batch 3");
    // A batch of the wrong shape, and one without targets.
    let bad = one_batch(
        Array::new([2, 4], vec![0f32; 8]).unwrap(),
        Some(Array::new([2], vec![0i32; 2]).unwrap()),
    );
    let e = m.fit_dataset(&bad, quiet()).unwrap_err().to_string();
    assert!(
        e.contains("fit_dataset: batch 1 of the dataset: x has shape [2, 4]"),
        "{e}"
    );
    let no_y = one_batch(Array::new([2, 3], vec![0f32; 6]).unwrap(), None);
    let e = m.fit_dataset(&no_y, quiet()).unwrap_err().to_string();
    assert!(e.contains("batch 1 of the dataset has no targets"), "{e}");
    // A NaN in a batch, a label out of range, a split of a dataset.
    let nan = one_batch(
        Array::new([1, 3], vec![0f32, f32::NAN, 0.]).unwrap(),
        Some(Array::new([1], vec![0i32]).unwrap()),
    );
    let e = m.fit_dataset(&nan, quiet()).unwrap_err().to_string();
    assert!(
        e.contains("batch 1 of the dataset") && e.contains("NaN"),
        "{e}"
    );
    let label = one_batch(
        Array::new([1, 3], vec![0f32; 3]).unwrap(),
        Some(Array::new([1], vec![5i32]).unwrap()),
    );
    let e = m.fit_dataset(&label, quiet()).unwrap_err().to_string();
    assert!(
        e.contains("batch 1 of the dataset") && e.contains('5'),
        "{e}"
    );
    let ok = Dataset::from_arrays(rows(4).0, rows(4).1).unwrap().batch(2);
    let e = m
        .fit_dataset(&ok, quiet().validation_split(0.5))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot split a dataset"), "{e}");
    let e = m
        .fit(
            &rows(4).0,
            &rows(4).1,
            quiet().validation_split(0.5).validation_dataset(&ok),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("both validation_split(0.5) and validation_dataset"),
        "{e}"
    );
}
