//! The run report: `report.json` (machine-readable, for the benches issue's ARM cost figure) and
//! `report.md` (the table for humans), both written atomically.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::error::SimError;
use crate::gates::CaseResult;
use crate::parity::format_db;
use crate::profile::Precision;

/// What the cases were run against, for the report header.
pub struct RunInfo {
    /// The model under test per precision, as the report names it.
    pub models: Vec<(Precision, String)>,
    pub reference_dir: String,
    pub reference_device: Option<String>,
    pub reference_steps: u32,
    /// The ONNX sha256 the reference names (`onnx.sha256`), if any.
    pub reference_model_sha256: Option<String>,
}

fn f64_or_inf(v: Option<f64>) -> Value {
    match v {
        Some(x) if x.is_infinite() => json!("inf"),
        Some(x) => json!(x),
        None => Value::Null,
    }
}

pub fn to_json(info: &RunInfo, cases: &[CaseResult]) -> Value {
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({
                "profile": c.profile, "qemu_cpu": c.qemu_cpu, "tract_kind": c.tract_kind, "threads": c.threads,
                "precision": c.precision.to_string(), "seed": c.seed, "steps": c.steps,
                "x0_reference": c.x0_reference, "psnr_db": f64_or_inf(c.psnr_db),
                "psnr_vs_host_db": f64_or_inf(c.psnr_vs_host_db), "model_sha256": c.model_sha256,
                "x0_sha256": c.x0_sha256, "host_x0_sha256": c.host_x0_sha256,
                "peak_heap_bytes": c.peak_heap_bytes, "memory_budget_bytes": c.budget_bytes,
                "instructions_per_eval": c.insn_per_eval, "instructions_per_eval_spread": c.insn_eval_spread,
                "instructions_per_image": c.insn_per_image, "instructions_total": c.insn_total,
                "wall_seconds": c.wall_s, "passed": c.passed(),
                "checks": c.checks.iter().map(|k| json!({"gate": k.gate, "passed": k.passed, "detail": k.detail})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let models: serde_json::Map<String, Value> = info.models.iter().map(|(p, m)| (p.to_string(), json!(m))).collect();
    json!({
        "model": model_line(info),
        "models": models,
        "reference": {"dir": info.reference_dir, "device": info.reference_device, "steps": info.reference_steps,
                      "model_sha256": info.reference_model_sha256},
        "passed": cases.iter().all(|c| c["passed"] == json!(true)) && !cases.is_empty(),
        "cases": cases,
    })
}

/// `fp32: models/a.onnx; int8: models/b.onnx`.
fn model_line(info: &RunInfo) -> String {
    info.models.iter().map(|(p, m)| format!("{p}: {m}")).collect::<Vec<_>>().join("; ")
}

fn millions(v: Option<f64>) -> String {
    v.map(|x| format!("{:.2} M", x / 1e6)).unwrap_or_else(|| "-".into())
}

pub fn to_markdown(info: &RunInfo, cases: &[CaseResult]) -> String {
    let mut s = markdown_header(info);
    s += "| profile | qemu cpu | tract kind | threads | precision | seed | steps | PSNR | PSNR vs x86_64 | x0 sha256 | peak heap / budget | instr/eval | eval spread | instr/image | wall | result |\n";
    s += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for c in cases {
        s += &markdown_row(c);
    }
    s += &same_bytes_summary(cases);
    let batches: Vec<bool> = cases.iter().filter_map(CaseResult::batch_passed).collect();
    if !batches.is_empty() {
        let passed = batches.iter().filter(|&&p| p).count();
        s += &format!(
            "\nbatch invariance (`--batch-check`): {passed} of {} cases' batches gave each image the bytes of its seed alone, on this CPU and on x86_64\n",
            batches.len()
        );
    }
    let x0_sources: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.x0_reference.as_str()).collect();
    s += &format!("\nx0 compared with: {}\n", x0_sources.into_iter().collect::<Vec<_>>().join("; "));
    let failures: Vec<String> = cases.iter().flat_map(CaseResult::failures).collect();
    if !failures.is_empty() {
        s += "\n## Failures\n\n";
        for f in failures {
            s += &format!("- {f}\n");
        }
    }
    s
}

/// Per precision and seed: the distinct x0 sha256 of the x86_64 host and every profile. One
/// means every CPU gave the same bytes (gated).
fn same_bytes_summary(cases: &[CaseResult]) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    let mut shas: BTreeMap<(String, u64), BTreeSet<&str>> = BTreeMap::new();
    for c in cases {
        let set = shas.entry((c.precision.to_string(), c.seed)).or_default();
        set.extend(c.x0_sha256.as_deref());
        set.extend(c.host_x0_sha256.as_deref());
    }
    let mut s = String::from("\nx0 sha256 across x86_64 and every profile run:\n");
    for ((precision, seed), set) in shas {
        let list = set.iter().map(|h| format!("`{}`", &h[..h.len().min(16)])).collect::<Vec<_>>().join(", ");
        let verdict = if set.len() == 1 { "one, the same bytes everywhere" } else { "differ" };
        s += &format!("- {precision} seed {seed}: {} distinct ({verdict}): {list}\n", set.len());
    }
    s
}

/// The title and what the cases ran against: models, reference, model identity, and what the
/// columns measure.
fn markdown_header(info: &RunInfo) -> String {
    let mut s = String::from("# firmware-sim report\n\n");
    for (precision, model) in &info.models {
        s += &format!("- {precision} model: `{model}`\n");
    }
    s += &format!(
        "- reference: `{}` ({} steps, made on {})\n",
        info.reference_dir,
        info.reference_steps,
        info.reference_device.as_deref().unwrap_or("unknown device")
    );
    s += &match &info.reference_model_sha256 {
        Some(sha) => format!("- model identity: fp32 runs' sha256 checked against the reference's `{sha}` (other precisions run another file: their sha256 is in report.json)\n"),
        None => "- model identity: NOT checked (reference.json names no ONNX sha256)\n".to_string(),
    };
    s += "- PSNR (gated): final sample vs the fp32 x0 named below, value range mapped to [0, 1]; PSNR vs x86_64 (not gated): vs the host \
          sampler's final sample for the same model, seed and steps; x0 sha256: of the final sample's f32 values, \
          gated equal to the x86_64 host's; instructions: guest \
          instructions counted by firmware-sim/plugin/insn_count.c (per eval = median over the run's evaluations; eval spread = (max - min) / mean; per image = the whole sampling loop)\n\n";
    s
}

/// One case's table row.
fn markdown_row(c: &CaseResult) -> String {
    let heap = c
        .peak_heap_bytes
        .map(|b| format!("{:.1} / {:.0} MiB", b as f64 / 1048576.0, c.budget_bytes as f64 / 1048576.0))
        .unwrap_or_else(|| "-".into());
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |\n",
        c.profile,
        c.qemu_cpu,
        c.tract_kind,
        c.threads,
        c.precision,
        c.seed,
        c.steps,
        c.psnr_db.map(format_db).unwrap_or_else(|| "-".into()),
        c.psnr_vs_host_db.map(format_db).unwrap_or_else(|| "-".into()),
        c.x0_sha256.as_deref().map(|h| format!("`{}`", &h[..h.len().min(16)])).unwrap_or_else(|| "-".into()),
        heap,
        millions(c.insn_per_eval),
        c.insn_eval_spread.map(|x| format!("{x:.1e}")).unwrap_or_else(|| "-".into()),
        millions(c.insn_per_image.map(|x| x as f64)),
        c.wall_s,
        if c.passed() { "pass" } else { "FAIL" },
    )
}

/// Writes `report.json` and `report.md` into `dir`; returns their paths.
pub fn write(dir: &Path, info: &RunInfo, cases: &[CaseResult]) -> Result<(PathBuf, PathBuf), SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::file(dir, e))?;
    let json_path = dir.join("report.json");
    let md_path = dir.join("report.md");
    edgediff_io::write_atomic(&json_path, format!("{:#}\n", to_json(info, cases)).as_bytes())?;
    edgediff_io::write_atomic(&md_path, to_markdown(info, cases).as_bytes())?;
    Ok((md_path, json_path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gates::Check;

    fn case(precision: Precision, psnr: f64, vs_host: Option<f64>) -> CaseResult {
        CaseResult {
            profile: "cortex-a53".into(),
            qemu_cpu: "cortex-a53".into(),
            tract_kind: "a53".into(),
            threads: 1,
            precision,
            seed: 0,
            steps: 50,
            x0_reference: "fp32 reference x0 (50 steps)".into(),
            psnr_db: Some(psnr),
            psnr_vs_host_db: vs_host,
            x0_sha256: Some("0123456789abcdef0123".into()),
            host_x0_sha256: Some("0123456789abcdef0123".into()),
            model_sha256: Some("abc".into()),
            peak_heap_bytes: Some(12 << 20),
            budget_bytes: 128 << 20,
            insn_per_eval: Some(63.2e6),
            insn_eval_spread: Some(1e-3),
            insn_per_image: Some(3_160_000_000),
            insn_total: Some(4_000_000_000),
            wall_s: 15.0,
            checks: vec![Check { gate: "x0 PSNR", passed: psnr >= 35.0, detail: format!("{psnr}") }],
        }
    }

    #[test]
    fn rows_carry_precision_and_both_psnrs() {
        let info = RunInfo {
            models: vec![(Precision::Fp32, "a.onnx".into()), (Precision::Int8, "b.onnx".into())],
            reference_dir: "ref".into(),
            reference_device: None,
            reference_steps: 50,
            reference_model_sha256: Some("abc".into()),
        };
        let cases =
            [case(Precision::Fp32, f64::INFINITY, Some(f64::INFINITY)), case(Precision::Int8, 40.25, Some(52.5))];
        let md = to_markdown(&info, &cases);
        assert!(md.contains("- int8 model: `b.onnx`"), "{md}");
        assert!(
            md.contains("| fp32 | 0 | 50 | inf dB | inf dB | `0123456789abcdef` | 12.0 / 128 MiB | 63.20 M |"),
            "{md}"
        );
        assert!(
            md.contains("| int8 | 0 | 50 | 40.25 dB | 52.50 dB | `0123456789abcdef` | 12.0 / 128 MiB | 63.20 M | 1.0e-3 | 3160.00 M |"),
            "{md}"
        );
        assert!(md.contains("- fp32 seed 0: 1 distinct (one, the same bytes everywhere): `0123456789abcdef`"), "{md}");
        let v = to_json(&info, &cases);
        assert_eq!(v["model"], json!("fp32: a.onnx; int8: b.onnx"));
        assert_eq!(v["models"]["int8"], json!("b.onnx"));
        assert_eq!(v["cases"][1]["precision"], json!("int8"));
        assert_eq!(v["cases"][1]["psnr_vs_host_db"], json!(52.5));
        assert_eq!(v["cases"][0]["x0_sha256"], json!("0123456789abcdef0123"));
        assert_eq!(v["cases"][0]["psnr_db"], json!("inf"));
        assert_eq!(v["passed"], json!(true));
        let failing = [case(Precision::Int8, 30.0, None)];
        assert_eq!(to_json(&info, &failing)["passed"], json!(false));
        assert!(to_markdown(&info, &failing).contains("| 30.00 dB | - |"));
    }
}
