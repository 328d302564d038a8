//! CI smoke test of the convnet example: Keras' simple MNIST convnet, built by the example's
//! own recipe (`examples/lab/mod.rs`), trains on a slice of the shipped MNIST. It asserts
//! accuracy, never time.

#[path = "../examples/lab/mod.rs"]
mod lab;

use kiln::nn::*;

#[test]
fn mnist_cnn_has_kerass_34826_parameters_and_learns_in_two_epochs_on_2000_images() {
    let m = lab::mnist(None).unwrap().into_images().unwrap();
    let (x, y) = lab::head(&m.train_x, &m.train_y, 2000).unwrap();
    let (xt, yt) = lab::head(&m.test_x, &m.test_y, 500).unwrap();
    let mut cnn = lab::mnist_cnn(1e-3).unwrap();
    let s = cnn.summary().unwrap();
    assert!(s.contains("Total params: 34,826"), "{s}");
    assert!(s.contains("(None, 5, 5, 64)"), "{s}");

    let before = cnn.evaluate(&xt, &yt, 500).unwrap()["accuracy"];
    let h = cnn
        .fit(
            &x,
            &y,
            FitConfig::new()
                .epochs(2)
                .batch_size(128)
                .verbosity(Verbosity::Silent),
        )
        .unwrap();
    let loss = &h.history["loss"];
    assert!(
        loss[1] < loss[0] && loss[1] < 2.0,
        "training loss per epoch {loss:?}"
    );
    let after = cnn.evaluate(&xt, &yt, 500).unwrap()["accuracy"];
    // Chance is 0.1 (0.08 before training); these 32 Adam steps reach 0.74 on held-out digits.
    assert!(
        after >= 0.5,
        "test accuracy {after} after two epochs (before: {before})"
    );
}
