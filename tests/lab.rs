//! CI smoke tests of the lab: the Iris example's recipe at full size, and a short MNIST run.
//! They run the examples' own recipes (`examples/lab/mod.rs`) and assert accuracy, never time.

#[path = "../examples/lab/mod.rs"]
mod lab;

use kiln::nn::*;

fn quiet() -> FitConfig {
    FitConfig::new().verbosity(Verbosity::Silent)
}

#[test]
fn iris_single_and_multi_layer_reach_93_percent() {
    let d = lab::iris(42).unwrap();
    for (name, mut m) in lab::iris_networks().unwrap() {
        m.fit(&d.x_train, &d.y_train, quiet().epochs(100).batch_size(16))
            .unwrap();
        let acc = m.evaluate(&d.x_test, &d.y_test, 32).unwrap()["accuracy"];
        assert!(acc >= 0.93, "{name}: test accuracy {acc}");
    }
}

#[test]
fn mnist_one_epoch_on_10k_reaches_90_percent() {
    let m = lab::mnist(None).unwrap();
    let (x, y) = lab::head(&m.train_x, &m.train_y, 10_000).unwrap();
    let mut mlp = lab::mlp(784, &[256, 128], 10, 0.2, 1e-3).unwrap();
    mlp.fit(&x, &y, quiet().epochs(1).batch_size(128)).unwrap();
    let acc = mlp.evaluate(&m.test_x, &m.test_y, 1000).unwrap()["accuracy"];
    assert!(acc >= 0.90, "test accuracy {acc}");
}
