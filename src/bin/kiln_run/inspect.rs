//! `kiln-run inspect PATH`: what a model takes, gives and holds.
//!
//! Three kinds of path, told apart by what they contain:
//! - a whole model (`Model::save`: a `model.txt` beside the graph): its layers (the
//!   summary), its inputs and outputs as the model defines them, its compile settings, and
//!   every variable (weights, then optimizer state);
//! - a saved graph (`kiln::saved::save`, `Model::save_inference`): `kiln::saved::signature`;
//! - an `.onnx` file: its graph inputs and outputs by ONNX name, and its initializers.

use kiln::saved::Signature;
use kiln::{Result, Ty};
use std::fmt::Write as _;
use std::path::Path;

/// Prints the report for `path` to stdout.
pub(crate) fn inspect(path: &Path) -> Result<()> {
    let report = if super::is_onnx(path) {
        onnx(path)?
    } else if path.join(kiln::nn::save::CONFIG_FILE).is_file() {
        whole_model(path)?
    } else {
        let s = kiln::saved::signature(path)?;
        format!("{}: a saved graph\n{}", path.display(), table(&s))
    };
    print!("{report}");
    Ok(())
}

/// Parameters in `vars` (elements of fixed shapes).
fn count(vars: &[(String, Ty)]) -> usize {
    vars.iter().map(|(_, t)| t.shape.numel().unwrap_or(0)).sum()
}

fn section(out: &mut String, title: &str, rows: &[(String, Ty)]) {
    let _ = writeln!(out, "{title} ({}):", rows.len());
    let w = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (n, t) in rows {
        let _ = writeln!(out, "  {n:<w$}  {t}");
    }
}

/// Inputs, outputs and variables, one per line.
fn table(s: &Signature) -> String {
    let mut out = String::new();
    section(&mut out, "inputs", &s.inputs);
    section(&mut out, "outputs", &s.outputs);
    let title = format!("variables, {} values", count(&s.variables));
    section(&mut out, &title, &s.variables);
    out
}

fn whole_model(dir: &Path) -> Result<String> {
    let mut m = kiln::nn::load_model(dir)?;
    let mut out = format!(
        "{}: a whole model (kiln.model format {})\n",
        dir.display(),
        kiln::nn::save::FORMAT_VERSION
    );
    out += &m.summary()?;
    let ty = |t: kiln::Tensor<'_>| {
        let d = t.graph().data();
        let n = d.node(t.id());
        (n.name.clone().unwrap_or_default().to_string(), n.ty.clone())
    };
    let inputs: Vec<_> = m.inputs()?.into_iter().map(ty).collect();
    let outputs: Vec<_> = m.outputs()?.into_iter().map(ty).collect();
    let training = ty(m.training_flag()?);
    let mut s = Signature {
        inputs,
        outputs,
        variables: vec![],
    };
    if let (Some(loss), Some(opt)) = (m.loss(), m.optimizer()) {
        let _ = writeln!(
            out,
            "compiled: loss {loss:?}, optimizer {:?}",
            opt.config().name
        );
    } else {
        out += "not compiled\n";
    }
    let _ = writeln!(out, "training switch: {} {}", training.0, training.1);
    s.variables = m
        .session()?
        .named_variables()
        .into_iter()
        .map(|(n, a)| {
            let ty = Ty {
                dtype: a.dtype(),
                shape: kiln::Shape::fixed(a.shape()),
            };
            (n, ty)
        })
        .collect();
    out += &table(&s);
    Ok(out)
}

fn onnx(path: &Path) -> Result<String> {
    let m = kiln::onnx::import(path)?;
    let d = m.graph.data();
    let named = |v: &[(String, kiln::NodeId)]| -> Vec<(String, Ty)> {
        v.iter()
            .map(|(n, id)| (n.clone(), d.node(*id).ty.clone()))
            .collect()
    };
    let s = Signature {
        inputs: named(&m.inputs),
        outputs: named(&m.outputs),
        variables: m
            .variables
            .iter()
            .map(|v| (v.name.clone(), d.node(v.id).ty.clone()))
            .collect(),
    };
    Ok(format!(
        "{}: an ONNX model (opset {})\n{}",
        path.display(),
        m.opset,
        table(&s)
    ))
}
