//! Build-time errors: each names the op, the operands' types and names, and the user's line.
//!
//! The snapshots replace the line and column with `L:C` so that they survive edits to this
//! file; each test asserts separately that the location is the line that created the op.

use kiln::prelude::*;

/// The graph's first error, checked to point at `line` of this file, with the location
/// normalized for the snapshot.
fn error_at(g: &Graph, line: u32) -> String {
    let msg = g
        .check()
        .expect_err("the graph should hold an error")
        .to_string();
    let prefix = format!("tests/errors.rs:{line}:");
    let at = msg
        .find(&prefix)
        .unwrap_or_else(|| panic!("{msg:?} does not point at line {line}"));
    let rest = &msg[at + prefix.len()..];
    let col_end = rest.find(':').expect("column");
    format!("{}tests/errors.rs:L:C{}", &msg[..at], &rest[col_end..])
}

#[test]
fn matmul_contraction_mismatch() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(784)]);
    let w = g.variable("dense_2/kernel", [128, 10], init::zeros());
    let line = line!() + 1;
    let _y = x.matmul(w);
    insta::assert_snapshot!(error_at(&g, line), @r#"matmul at tests/errors.rs:L:C: cannot contract f32[?,784] "x" with f32[128,10] "dense_2/kernel" (784 != 128)"#);
}

#[test]
fn broadcast_mismatch() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [2, 3]);
    let b = g.placeholder("b", DType::F32, [4]);
    let line = line!() + 1;
    let _c = a + b;
    insta::assert_snapshot!(error_at(&g, line), @r#"add at tests/errors.rs:L:C: cannot broadcast [2,3] with [4] (3 != 4 in axis 1 of the result): f32[2,3] "a" and f32[4] "b""#);
}

#[test]
fn batch_against_fixed_size() {
    let g = Graph::new();
    let a = g.placeholder("a", DType::F32, [None, Some(3)]);
    let b = g.placeholder("b", DType::F32, [5, 3]);
    let line = line!() + 1;
    let _c = a * b;
    insta::assert_snapshot!(error_at(&g, line), @r#"mul at tests/errors.rs:L:C: cannot broadcast [?,3] with [5,3] (? != 5 in axis 0 of the result): f32[?,3] "a" and f32[5,3] "b""#);
}

#[test]
fn dtype_mismatch() {
    let g = Graph::new();
    let a = g.placeholder("logits", DType::F32, [4]);
    let b = g.placeholder("labels", DType::I32, [4]);
    let line = line!() + 1;
    let _c = a - b;
    insta::assert_snapshot!(error_at(&g, line), @r#"sub at tests/errors.rs:L:C: operand dtypes differ: f32[4] "logits" vs i32[4] "labels""#);
}

#[test]
fn float_op_on_integers() {
    let g = Graph::new();
    let y = g.placeholder("y", DType::I32, [None]);
    let line = line!() + 1;
    let _l = y.log();
    insta::assert_snapshot!(error_at(&g, line), @"log at tests/errors.rs:L:C: log needs a float operand, got i32");
}

#[test]
fn open_dimension_not_leading() {
    let g = Graph::new();
    let line = line!() + 1;
    let _x = g.placeholder("x", DType::F32, [Some(3), None]);
    insta::assert_snapshot!(error_at(&g, line), @"placeholder at tests/errors.rs:L:C: only the leading dimension may be open (?), got [3,?]");
}

#[test]
fn variable_with_open_dimension() {
    let g = Graph::new();
    let line = line!() + 1;
    let _w = g.variable("w", [None, Some(3)], init::zeros());
    insta::assert_snapshot!(error_at(&g, line), @"variable at tests/errors.rs:L:C: a variable's shape must be fully known, got [?,3]");
}

#[test]
fn duplicate_variable_name() {
    let g = Graph::new();
    let _a = g.variable("dense_1/kernel", [2, 2], init::zeros());
    let line = line!() + 1;
    let _b = g.variable("dense_1/kernel", [2, 2], init::zeros());
    insta::assert_snapshot!(error_at(&g, line), @r#"variable at tests/errors.rs:L:C: the name "dense_1/kernel" is already taken"#);
}

#[test]
fn tensor_from_another_graph() {
    let g1 = Graph::new();
    let g2 = Graph::new();
    let a = g1.placeholder("a", DType::F32, [3]);
    let b = g2.placeholder("b", DType::F32, [3]);
    let line = line!() + 1;
    let _c = a + b;
    insta::assert_snapshot!(error_at(&g1, line), @"add at tests/errors.rs:L:C: operand 2 belongs to a different graph (tensors cannot cross graphs)");
    // The other graph is untouched.
    g2.check().unwrap();
}

#[test]
fn reduce_axis_out_of_range() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [2, 3]);
    let line = line!() + 1;
    let _s = x.sum(&[2], false);
    insta::assert_snapshot!(error_at(&g, line), @r#"reduce_sum at tests/errors.rs:L:C: axis 2 is out of range for rank 2 of f32[2,3] "x""#);
}

#[test]
fn reshape_count_mismatch() {
    let g = Graph::new();
    let x = g.placeholder("images", DType::F32, [None, Some(28), Some(28)]);
    let line = line!() + 1;
    let _r = x.reshape(Shape::batch(&[780]));
    insta::assert_snapshot!(error_at(&g, line), @r#"reshape at tests/errors.rs:L:C: cannot reshape f32[?,28,28] "images" to [?,780]: element counts differ"#);
}

#[test]
fn slice_out_of_bounds() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 5]);
    let line = line!() + 1;
    let _s = x.narrow(1, 3, 4);
    insta::assert_snapshot!(error_at(&g, line), @r#"slice at tests/errors.rs:L:C: slice [3, 3+4) is out of bounds for axis 1 of f32[4,5] "x""#);
}

#[test]
fn where_needs_bool_condition() {
    let g = Graph::new();
    let c = g.placeholder("mask", DType::F32, [3]);
    let a = g.placeholder("a", DType::F32, [3]);
    let line = line!() + 1;
    let _w = c.select(a, 0.0);
    insta::assert_snapshot!(error_at(&g, line), @r#"where at tests/errors.rs:L:C: condition must be bool, got f32[3] "mask""#);
}

#[test]
fn argmax_along_open_axis() {
    let g = Graph::new();
    let x = g.placeholder("scores", DType::F32, [None, Some(10)]);
    let line = line!() + 1;
    let _a = x.argmax(0);
    insta::assert_snapshot!(error_at(&g, line), @r#"argmax at tests/errors.rs:L:C: cannot take argmax along the open axis of f32[?,10] "scores""#);
}

#[test]
fn errors_do_not_cascade_and_are_counted() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [None, Some(784)]);
    let w = g.variable("w", [100, 10], init::zeros());
    let line = line!() + 1;
    let h = x.matmul(w);
    // Everything built on the failed matmul is invalid without further errors...
    let loss = (h.relu() * 2.0).sum_all();
    let _ = loss.exp();
    assert_eq!(g.data().errors().len(), 1);
    // ...but an independent mistake is a second error, listed after the first with its own
    // op, operand type and line.
    let line2 = line!() + 1;
    let _bad = x.sum(&[5], false);
    let msg = g.check().unwrap_err().to_string();
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 3, "{msg}");
    assert!(
        lines[0].starts_with(&format!("matmul at tests/errors.rs:{line}:")),
        "{msg}"
    );
    assert!(
        lines[0].ends_with(r#"cannot contract f32[?,784] "x" with f32[100,10] "w" (784 != 100)"#),
        "{msg}"
    );
    assert_eq!(lines[1], "and 1 more error:");
    assert!(
        lines[2].starts_with(&format!("  reduce_sum at tests/errors.rs:{line2}:")),
        "{msg}"
    );
    assert!(lines[2].contains(r#"f32[?,784] "x""#), "{msg}");
    let Error::Graph { more, .. } = g.check().unwrap_err() else {
        panic!("a graph error");
    };
    assert_eq!(more.len(), 1);
}

/// Many mistakes: the first 10 after the first are listed, each at its own line, and the
/// rest counted; the error's `more` field holds them all.
#[test]
fn many_errors_list_the_first_ten_and_count_the_rest() {
    let g = Graph::new();
    let x = g.placeholder("x", DType::F32, [4, 3]);
    let mut first = 0;
    for k in 0..14 {
        first = line!() + 1;
        let _ = x.sum(&[5 + k], false);
    }
    let e = g.check().unwrap_err();
    let msg = e.to_string();
    let got: Vec<&str> = msg.lines().collect();
    assert!(
        got[0].starts_with("reduce_sum at tests/errors.rs:"),
        "{msg}"
    );
    assert_eq!(got[1], "and 13 more errors:", "{msg}");
    // Every one of the 14 is made on the same line of the loop.
    for l in &got[2..12] {
        assert!(
            l.starts_with(&format!("  reduce_sum at tests/errors.rs:{first}:")),
            "{msg}"
        );
        assert!(l.contains(r#"f32[4,3] "x""#), "{msg}");
    }
    assert_eq!(
        got[12],
        "  ... and 3 more errors (Error::Graph's `more` holds them all)"
    );
    assert_eq!(got.len(), 13, "{msg}");
    let Error::Graph { more, .. } = e else {
        panic!("a graph error");
    };
    assert_eq!(more.len(), 13);
}

#[test]
fn composite_errors_point_at_the_user_line() {
    let g = Graph::new();
    let logits = g.placeholder("logits", DType::F32, [None, Some(10)]);
    let labels = g.placeholder("labels", DType::F32, [None, Some(9)]);
    let line = line!() + 1;
    let _l = logits.softmax_cross_entropy_with_logits(labels);
    let msg = error_at(&g, line);
    assert!(
        msg.starts_with("mul at tests/errors.rs:L:C: cannot broadcast [?,9] with [?,10]"),
        "{msg}"
    );
}

/// `{}` is the error's own message, `{:?}` adds its causes (what `fn main() -> Result`
/// prints), `{:#?}` shows the variant and fields.
#[test]
fn io_errors_keep_their_source_and_print_for_people() {
    let missing = std::env::temp_dir().join("kiln-no-such-dir/x.csv");
    let e = kiln::data::read_csv(&missing).unwrap_err();
    let Error::Io {
        ref path,
        ref source,
        ..
    } = e
    else {
        panic!("expected Error::Io, got {e:#?}");
    };
    assert_eq!(path, &missing);
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    let os = source.to_string();

    let display = e.to_string();
    assert_eq!(
        display,
        format!("{}: cannot read the CSV file", missing.display())
    );
    assert!(
        !display.contains(&os),
        "the cause is not repeated: {display}"
    );

    let debug = format!("{e:?}");
    assert_eq!(debug, format!("{display}\n\nCaused by:\n    {os}"));

    let structure = format!("{e:#?}");
    assert!(structure.starts_with("Io {"), "{structure}");
    assert!(
        structure.contains("action: \"cannot read the CSV file\""),
        "{structure}"
    );

    // An error without a cause prints its message alone.
    let e = Error::invalid("bad argument");
    assert_eq!(format!("{e:?}"), "bad argument");
    assert_eq!(format!("{e:#?}"), "Invalid(\n    \"bad argument\",\n)");
}

/// A feed of the wrong dtype or shape names the line that made the placeholder, on both
/// backends: the run may be far from where `x` was declared.
#[test]
fn feed_mismatch_names_the_placeholder_line() {
    let g = Graph::new();
    let line = line!() + 1;
    let x = g.placeholder("x", DType::F32, [None, Some(3)]);
    let y = x.sum_all();
    let at = format!("placeholder was made at tests/errors.rs:{line}:");
    for b in [Backend::Jit, Backend::Interpreter] {
        let mut s = Session::with_backend(&g, b).unwrap();
        let wrong_dtype = Array::zeros(DType::I32, [2, 3]);
        let e = s.run(&[y], &[(x, wrong_dtype)]).unwrap_err().to_string();
        assert!(
            e.contains(r#""x" expects f32[?,3], but the fed array holds i32"#) && e.contains(&at),
            "{b:?}: {e}"
        );
        let wrong_shape = Array::zeros(DType::F32, [2, 4]);
        let e = s.run(&[y], &[(x, wrong_shape)]).unwrap_err().to_string();
        assert!(
            e.contains("but the fed array has shape [2, 4]") && e.contains(&at),
            "{b:?}: {e}"
        );
    }
}
