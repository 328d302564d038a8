//! Errors raised while a graph runs (or when a run is refused) name what a build error names:
//! the user's op, its name and the line that made it, the same on both backends.
//!
//! Each test asserts the exact location with `file!()` and `line!()`, and runs the mistake on
//! the JIT and on the interpreter, which must give the same message.

use kiln::prelude::*;

/// `file:line:` of a line of this file.
fn at(line: u32) -> String {
    format!("{}:{line}:", file!())
}

/// Runs `fetches` with `feeds` on both backends and returns the error both give (asserting
/// that each refuses the run and that the messages are equal).
fn both_fail(g: &Graph, fetches: &[Tensor<'_>], feeds: &[(Tensor<'_>, Array)]) -> String {
    let mut msgs = vec![];
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(g, backend).unwrap();
        let e = s
            .run(fetches, feeds)
            .expect_err(&format!("{backend:?} ran the mistake"));
        msgs.push(e.to_string());
    }
    assert_eq!(msgs[0], msgs[1], "the backends report different errors");
    msgs.remove(0)
}

#[test]
fn integer_division_by_zero_names_the_op_its_name_and_line() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::I32, [None, Some(3)]);
    let b = g.placeholder("b", DType::I32, [None, Some(3)]);
    let line = line!() + 1;
    let ratio = (a / b).named("ratio");
    // Fused with its neighbours on the JIT: the error still names the division.
    let y = (ratio * 2 + 1).sum(&[1], false);
    let av = Array::new([2, 3], vec![1i32, 2, 3, 4, 5, 6]).unwrap();
    let bv = Array::new([2, 3], vec![1i32, 1, 1, 1, 0, 1]).unwrap();
    let msg = both_fail(&g, &[y], &[(a, av), (b, bv)]);
    assert!(
        msg.starts_with(&format!("div \"ratio\" at {}", at(line))),
        "{msg}"
    );
    assert!(msg.ends_with(": integer division by zero"), "{msg}");
    assert!(!msg.contains("NodeId"), "{msg}");
}

/// Two integer divisions fused into one kernel: the kernel's flag does not say which one
/// divided by zero, so the JIT names the first and lists the other; the message still names
/// user ops and lines, never an internal id.
#[test]
fn two_fused_divisions_are_both_named_on_the_jit() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::I32, [None, Some(3)]);
    let b = g.placeholder("b", DType::I32, [None, Some(3)]);
    let l1 = line!() + 1;
    let q1 = (a / b).named("q1");
    let l2 = line!() + 1;
    let q2 = (b / a).named("q2");
    let y = q1 + q2;
    let av = Array::new([1, 3], vec![1i32, 2, 3]).unwrap();
    let bv = Array::new([1, 3], vec![1i32, 0, 1]).unwrap();
    let mut interp = Session::with_backend(&g, Backend::Interpreter).unwrap();
    let i = interp.run(&[y], &[(a, av.clone()), (b, bv.clone())]);
    let i = i.unwrap_err().to_string();
    assert_eq!(
        i,
        format!(
            "div \"q1\" at {}{}: integer division by zero",
            at(l1),
            col(&i)
        )
    );
    let mut jit = Session::new(&g).unwrap();
    let j = jit.run(&[y], &[(a, av), (b, bv)]).unwrap_err().to_string();
    assert!(j.starts_with(&format!("div \"q1\" at {}", at(l1))), "{j}");
    assert!(
        j.contains(&format!(
            "integer division by zero (here, or in div \"q2\" at {}",
            at(l2)
        )),
        "{j}"
    );
    assert!(!j.contains("NodeId") && !j.contains("kernel #"), "{j}");
}

/// The column after the first `file:line:` in a message (the tests assert the file and
/// line).
fn col(msg: &str) -> String {
    let rest = &msg[msg.find(".rs:").expect("a location") + 4..];
    let rest = &rest[rest.find(':').expect("line:col") + 1..];
    rest.chars().take_while(char::is_ascii_digit).collect()
}

/// A fetch or a feed from another graph names which one (fetch or feed, its position), its
/// name and type, and the line that made it.
#[test]
fn a_tensor_from_another_graph_is_named() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(2)]);
    let y = x * 2.0;
    let other = Graph::new();
    let lx = line!() + 1;
    let x2 = other.placeholder("x", DType::F32, [None, Some(2)]);
    let ly = line!() + 1;
    let y2 = x2.exp().named("hidden");
    let xv = Array::new([1, 2], vec![1.0f32, 2.0]).unwrap();
    let mut msgs = vec![];
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        let e = s.run(&[y, y2], &[(x, xv.clone())]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "run: fetch 1 (\"hidden\": exp f32[?,2], made at {}",
                at(ly)
            )),
            "{e}"
        );
        assert!(
            e.contains(") is from another graph than the one being run"),
            "{e}"
        );
        let e = s.run(&[y], &[(x2, xv.clone())]).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "run: feed 0 (\"x\": placeholder f32[?,2], made at {}",
                at(lx)
            )),
            "{e}"
        );
        msgs.push(e);
    }
    assert_eq!(msgs[0], msgs[1]);
    // The plain interpreter says the same.
    let mut it = Interpreter::new(&g).unwrap();
    let e = it.run(&[y], &[(x2, xv)]).unwrap_err().to_string();
    assert_eq!(e, msgs[0]);
    // So does set_variable, by the variable's name.
    let v = other.variable("w2", [2], init::zeros());
    let mut s = Session::new(&g).unwrap();
    let e = s.set_variable(v, Array::new([2], vec![1.0f32, 2.0]).unwrap());
    let e = e.unwrap_err().to_string();
    assert!(e.contains(r#""w2""#) && e.contains("another graph"), "{e}");
}

/// F6: a `?` that no fed placeholder sets is refused on both backends, naming the op that
/// has it with its line, and the placeholder to feed with its line.
#[test]
fn an_unfed_batch_names_the_op_and_the_placeholder_to_feed() {
    let g = Graph::new();
    let lx = line!() + 1;
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let lr = line!() + 1;
    let r = g.random_uniform([None, Some(3)], 0.0, 1.0, 1);
    let _ = x;
    let msg = both_fail(&g, &[r], &[]);
    assert!(
        msg.starts_with(&format!(
            "run: cannot tell the batch size for f32[?,3] (random_uniform), made at {}",
            at(lr)
        )),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "no fed placeholder has an open dimension; feed \"x\" (f32[?,3], made at {}",
            at(lx)
        )),
        "{msg}"
    );
    assert!(msg.ends_with(") to set it"), "{msg}");
}

/// `check_feeds_finite(true)` refuses a feed holding NaN or inf, naming the placeholder, its
/// line, and the first bad element's index and value; off (the default) the run goes on.
#[test]
fn check_feeds_finite_names_the_placeholder_and_the_element() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let lw = line!() + 1;
    let w = g.placeholder("weights", DType::F64, [3]);
    let y = x.sum(&[1], false) + w.sum_all().cast(DType::F32);
    let xv = Array::new([2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let wv = Array::new([3], vec![0.5f64, f64::INFINITY, f64::NAN]).unwrap();
    let feeds = [(x, xv), (w, wv)];
    let mut msgs = vec![];
    for backend in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, backend).unwrap();
        // Off by default: inf flows through.
        let out = s.run(&[y], &feeds).unwrap();
        assert!(out[0].to_vec::<f32>().unwrap().iter().all(|v| v.is_nan()));
        s.check_feeds_finite(true);
        let e = s.run(&[y], &feeds).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "run: the array fed to \"weights\" (f64[3], made at {}{}) holds inf at index [1] \
                 (element 1); fix the data, or turn this check off with \
                 Session::check_feeds_finite(false)",
                at(lw),
                col(&e)
            )
        );
        s.check_feeds_finite(false);
        assert!(s.run(&[y], &feeds).is_ok());
        msgs.push(e);
    }
    assert_eq!(msgs[0], msgs[1]);
}

/// A missing saved model or checkpoint says so in plain words: the path, what kiln was doing,
/// and the OS's reason, as `fn main() -> kiln::Result<()>` prints it (`{:?}`).
#[test]
fn a_missing_path_is_reported_in_plain_words() {
    let dir = std::env::temp_dir().join("kiln-no-such-saved-model");
    let Err(e) = kiln::saved::load(&dir) else {
        panic!("a missing directory loaded");
    };
    let shown = format!("{e:?}");
    assert!(
        shown.starts_with(&format!(
            "{}: cannot read the saved graph",
            dir.join(kiln::saved::GRAPH_FILE).display()
        )),
        "{shown}"
    );
    assert!(
        shown.contains("\n\nCaused by:\n    No such file"),
        "{shown}"
    );

    let g = Graph::new();
    let _ = g.variable("w", [2], init::zeros());
    let mut s = Session::new(&g).unwrap();
    let path = dir.join("model.safetensors");
    let e = s.restore(&path).unwrap_err();
    let shown = format!("{e:?}");
    assert!(shown.starts_with(&path.display().to_string()), "{shown}");
    assert!(shown.contains("cannot read"), "{shown}");
    assert!(
        shown.contains("\n\nCaused by:\n    No such file"),
        "{shown}"
    );
    assert!(
        !shown.contains("Io {") && !shown.contains("Os {"),
        "{shown}"
    );
}
