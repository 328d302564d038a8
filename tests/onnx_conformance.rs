//! The committed subset of the ONNX backend node tests (`tests/data/onnx-node`, see its
//! `SOURCE.md`): every case passes on both backends at onnx's tolerances, except the few
//! that kiln refuses by design, which must be refused with an error naming the op and opset.
//! The full suite (1,858 cases) is `kiln-run onnx-conformance DIR`.

use kiln::onnx::CaseOutcome;
use std::path::PathBuf;

/// Cases kiln refuses on purpose, and a piece of each refusal's message.
const REFUSED: &[(&str, &str)] = &[
    (
        "test_cast_FLOAT_to_FLOAT8E4M3FN",
        "(Cast, opset 28): casting to FLOAT8E4M3FN is not supported",
    ),
    (
        "test_sub_uint16",
        "graph input \"x\" is UINT16, and kiln has no UINT16 values",
    ),
];

#[test]
fn committed_node_tests_pass_on_both_backends() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/onnx-node");
    let report = kiln::onnx::run_suite(&dir).unwrap();
    assert_eq!(report.cases.len(), 219, "{}", report.table());
    let mut bad = vec![];
    for c in &report.cases {
        match (REFUSED.iter().find(|(n, _)| *n == c.name), &c.outcome) {
            (None, CaseOutcome::Passed) => {}
            (Some((_, want)), CaseOutcome::Refused(msg)) if msg.contains(want) => {}
            (_, o) => bad.push(format!("{} ({}): {o:?}", c.name, c.op)),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let table = report.table();
    assert!(table.contains("| Conv | 5 | 5 | 0 | 0 | 0 |"), "{table}");
}
