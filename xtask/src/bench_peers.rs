//! The `BENCHMARKS.md` sections that weigh our runtime against its peers at their best: our int8
//! against ONNX Runtime's own static quantisation, and a diffusers export against our own.

use std::fmt::Write;

use crate::bench_markdown::{cell, find, EvalKey};
use crate::bench_report::Timing;

/// Our int8 against ONNX Runtime's fastest int8: its own static QDQ quantisation of the fp32
/// file (fused into QLinearConv), beside its ConvInteger run of our int8 file.
pub fn ort_static_int8(s: &mut String, t: &[Timing], keys: &[EvalKey]) {
    let rows: Vec<&EvalKey> =
        keys.iter().filter(|k| k.1 == "int8" && find(t, &k.0, "ortqdq-int8", &k.2).is_some()).collect();
    if rows.is_empty() {
        let _ = writeln!(s, "ONNX Runtime's static QDQ int8: not measured (`benches/support/ort_qdq.py` needs `target/pyenv` with onnx, onnxruntime, numpy).\n");
        return;
    }
    let _ = writeln!(s, "### int8 against ONNX Runtime's own static quantisation (same run)\n\n`ORT QDQ` is ONNX Runtime on its own int8 form of the fp32 file (`benches/support/ort_qdq.py`: ORT's pre-processing, `quantize_static` QDQ, per-channel int8 weights, uint8 activations; ORT fuses it into QLinearConv/QLinearMatMul), its fast int8 path; `ORT ConvInteger` is ONNX Runtime on our int8 file.\n\n| model | threads | tract int8 | ORT QDQ int8 | ORT ConvInteger int8 | tract int8 / ORT QDQ int8 | ≤ 0.8 |\n|---|---|---|---|---|---|---|");
    for (group, _, param) in rows {
        let (ours, qdq) = (find(t, group, "tract-int8", param), find(t, group, "ortqdq-int8", param));
        let ratio = match (ours, qdq) {
            (Some(a), Some(b)) => a.median_ns / b.median_ns,
            _ => f64::NAN,
        };
        let met = if ratio <= 0.8 { "yes" } else { "**no**" };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {ratio:.2} | {met} |",
            &group[5..],
            &param[1..],
            cell(ours),
            cell(qdq),
            cell(find(t, group, "ort-int8", param))
        );
    }
    s.push('\n');
}

/// The diffusers export against our own export of the same architecture: tract / ORT on each,
/// for every precision and thread count both have, and each engine's time on the diffusers
/// file over its time on ours (a peer faster on one file than the other moves the first ratio
/// without any change in ours).
pub fn diffusers_vs_ours(s: &mut String, t: &[Timing], keys: &[EvalKey]) {
    let rows: Vec<&EvalKey> = keys.iter().filter(|k| k.0 == "eval-diffusers35m").collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(s, "### A diffusers export against our own (same architecture, same run)\n\n| precision | threads | tract / ORT, diffusers export | tract / ORT, our export | no worse? | tract: diffusers / ours | ORT: diffusers / ours |\n|---|---|---|---|---|---|---|");
    for (_, precision, param) in rows {
        let median =
            |group: &str, engine: &str| Some(find(t, group, &format!("{engine}-{precision}"), param)?.median_ns);
        let over = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        let ratio = |group: &str| over(median(group, "tract"), median(group, "ort"));
        let (theirs, ours) = (ratio("eval-diffusers35m"), ratio("eval-ddpm35m"));
        let file_ratio = |engine: &str| over(median("eval-diffusers35m", engine), median("eval-ddpm35m", engine));
        let cell = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}"));
        let verdict = match (theirs, ours) {
            (Some(a), Some(b)) if a <= b => "yes",
            (Some(_), Some(_)) => "**no**",
            _ => "—",
        };
        let _ = writeln!(
            s,
            "| {precision} | {} | {} | {} | {verdict} | {} | {} |",
            &param[1..],
            cell(theirs),
            cell(ours),
            cell(file_ratio("tract")),
            cell(file_ratio("ort"))
        );
    }
    s.push('\n');
}
