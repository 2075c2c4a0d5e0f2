//! Renders `BENCHMARKS.md` from what `bench_report` measured. Only measured values appear;
//! whatever was not measured says so in words. The sections comparing peers are in
//! `bench_peers`, the board's in `bench_board_markdown`.

use std::fmt::Write;

use serde_json::Value;

use crate::bench_report::{Report, Timing};

pub fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmarks\n");
    let _ = writeln!(
        s,
        "Written by `cargo xtask bench-report` on {} ({:.0} s for the whole report). Load average \
         (1/5/15 min) {} before, {} after: on an idle machine the 1-minute figure stays well below the \
         core count.\n",
        r.started, r.wall_seconds, r.load_before, r.load_after
    );
    if r.quick {
        let _ = writeln!(
            s,
            "**Quick mode** (`--quick`, criterion `{}`): short runs, for checking the pipeline, not for quoting.\n",
            r.criterion_args.join(" ")
        );
    }
    section_kv(&mut s, "Machine", &r.machine);
    section_kv(&mut s, "Versions", &r.versions);
    models(&mut s, r);
    evals(&mut s, r);
    sampling(&mut s, &r.timings);
    memory(&mut s, r);
    crate::bench_board_markdown::render(&mut s, r);
    instructions(&mut s, r);
    method(&mut s, r);
    s
}

fn section_kv(s: &mut String, title: &str, rows: &[(String, String)]) {
    let _ = writeln!(s, "## {title}\n\n| | |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s.push('\n');
}

fn models(s: &mut String, r: &Report) {
    let _ =
        writeln!(s, "## Models\n\n| key | file | parameters | precision | size | sha256 |\n|---|---|---|---|---|---|");
    for m in &r.models {
        let path = m["path"].as_str().unwrap_or("?");
        let short = path
            .split_once("/models/")
            .map(|(_, p)| format!("models/{p}"))
            .or_else(|| path.split_once("/target/").map(|(_, p)| format!("target/{p}")))
            .unwrap_or(path.to_string());
        let _ = writeln!(
            s,
            "| {} | `{short}` | {:.2} M | {} | {} | `{}` |",
            m["key"].as_str().unwrap_or("?"),
            m["params"].as_f64().unwrap_or(0.0) / 1e6,
            m["precision"].as_str().unwrap_or("?"),
            bytes(m["file_bytes"].as_u64()),
            &m["sha256"].as_str().unwrap_or("?")[..12.min(m["sha256"].as_str().unwrap_or("?").len())]
        );
    }
    let _ = writeln!(s, "\n`sprites` is the default model; `ddpm35m` has DDPM's CIFAR-10 layout (128 channels, x[1,2,2,2], 2 blocks per level, attention at 16x16) with seeded random weights, exported by our exporter at bench time (timing does not depend on weight values); `diffusers35m` is diffusers' `UNet2DModel` with google/ddpm-cifar10-32's config (random weights) exported by `torch.onnx.export` (`tests/fixtures/diffusers/generate.py --cifar10`) and brought to one file by `sampler import`'s code: the same graph, its int64 timestep cast in front.\n");
}

/// (engine, precision) from a function id like `tract-fp32`.
fn engine_precision(function: &str) -> Option<(&str, &str)> {
    function.split_once('-')
}

pub(crate) fn find<'a>(t: &'a [Timing], group: &str, function: &str, param: &str) -> Option<&'a Timing> {
    t.iter().find(|x| x.group == group && x.function == function && x.param.as_deref() == Some(param))
}

/// (model group, precision, `t<threads>` param) of one row of the evaluation table.
pub(crate) type EvalKey = (String, String, String);

fn evals(s: &mut String, r: &Report) {
    let t = &r.timings;
    let _ = writeln!(
        s,
        "## One network evaluation (batch 1)\n\nCriterion median per evaluation, [95% confidence interval of the median]; both engines measured in this run, same model file, same input, same thread count.\n\n\
         | model | precision | threads | tract | ONNX Runtime | tract / ORT (above 1: tract slower) |\n|---|---|---|---|---|---|"
    );
    let keys = eval_keys(r);
    for (group, precision, param) in &keys {
        let tract = find(t, group, &format!("tract-{precision}"), param);
        let ort = find(t, group, &format!("ort-{precision}"), param);
        let ratio = match (tract, ort) {
            (Some(a), Some(b)) => format!("**{:.2}**", a.median_ns / b.median_ns),
            _ => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {precision} | {} | {} | {} | {ratio} |",
            &group[5..],
            &param[1..],
            cell(tract),
            cell(ort)
        );
    }
    int8_ratios(s, t, &keys);
    crate::bench_peers::ort_static_int8(s, t, &keys);
    crate::bench_peers::diffusers_vs_ours(s, t, &keys);
}

/// The distinct rows of the evaluation table: models in the report's order (default model
/// first), then precision, then threads.
fn eval_keys(r: &Report) -> Vec<EvalKey> {
    let mut keys: Vec<EvalKey> = Vec::new();
    for x in r.timings.iter().filter(|x| x.group.starts_with("eval-")) {
        if let (Some((_, precision)), Some(param)) = (engine_precision(&x.function), &x.param) {
            let k = (x.group.clone(), precision.to_string(), param.clone());
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let rank = |group: &str| {
        r.models
            .iter()
            .position(|m| m["key"].as_str().is_some_and(|k| group == format!("eval-{k}")))
            .unwrap_or(usize::MAX)
    };
    keys.sort_by(|a, b| (rank(&a.0), &a.1, &a.2).cmp(&(rank(&b.0), &b.1, &b.2)));
    keys
}

/// int8 against fp32 per engine, and the engines against each other, for every int8 row.
fn int8_ratios(s: &mut String, t: &[Timing], keys: &[EvalKey]) {
    let int8: Vec<&EvalKey> = keys.iter().filter(|k| k.1 == "int8").collect();
    if int8.is_empty() {
        let _ = writeln!(s, "\nint8: not measured (no int8 rows in this run), so no int8/fp32 ratios.\n");
        return;
    }
    let _ = writeln!(s, "\n### Ratios (same run; below 1: the first is faster)\n\n`tract` is our runtime as `sampler` runs it: tract plus our own ops (int8 convolutions and matrix products on `crates/qconv`, GroupNorm; in models in the fixed float order every float operation on our fixed-order kernels, `crates/fkernels`, the same bytes on every CPU: every model here but `sprites-cond-int8.onnx`, which keeps tract's order); `tractonly` is the same runtime on tract's operators alone, the state before those ops (the same bits for an int8 model in tract's order, within rounding otherwise).\n\n| model | threads | tract int8/fp32 | tractonly int8/fp32 | tract fp32 / tractonly fp32 | ORT int8/fp32 | tract int8 / ORT int8 |\n|---|---|---|---|---|---|---|");
    for (group, _, param) in int8 {
        let ratio = |a: &str, b: &str| match (find(t, group, a, param), find(t, group, b, param)) {
            (Some(x), Some(y)) => format!("{:.2}", x.median_ns / y.median_ns),
            _ => "—".into(),
        };
        let r = |engine: &str| ratio(&format!("{engine}-int8"), &format!("{engine}-fp32"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            &group[5..],
            &param[1..],
            r("tract"),
            r("tractonly"),
            ratio("tract-fp32", "tractonly-fp32"),
            r("ort"),
            ratio("tract-int8", "ort-int8")
        );
    }
    s.push('\n');
}

fn sampling(s: &mut String, t: &[Timing]) {
    let _ = writeln!(s, "## Sampling the default model (50-step DDIM, eta 0, batch 1, tract)\n\n| threads | whole sample | per step | one eval alone (above) |\n|---|---|---|---|");
    let samples: Vec<&Timing> = t.iter().filter(|x| x.group == "sample-sprites").collect();
    for x in &samples {
        let param = x.param.as_deref().unwrap_or("t?");
        let precision = x.function.rsplit('-').next().unwrap_or("fp32");
        let alone = find(t, "eval-sprites", &format!("tract-{precision}"), param);
        let _ = writeln!(s, "| {} | {} | {} | {} |", &param[1..], cell(Some(x)), time(x.median_ns / 50.0), cell(alone));
    }
    let _ = writeln!(s, "\nScheduler + noise alone (the same loop without the network: scheduler set-up, x_T, per-step timestep buffer, finite check, DDIM step; eta 1 also draws fresh noise every step):\n\n| loop | median | share of the 1-thread sample |\n|---|---|---|");
    let whole = samples.iter().find(|x| x.param.as_deref() == Some("t1"));
    for x in t.iter().filter(|x| x.group == "overhead-sprites") {
        let share = whole.map(|w| format!("{:.4} %", 100.0 * x.median_ns / w.median_ns)).unwrap_or_else(|| "—".into());
        let _ = writeln!(s, "| {} | {} | {share} |", x.function, cell(Some(x)));
    }
    s.push('\n');
}

fn memory(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "## Peak memory (load + plan + 2 evaluations, one process per row)\n\n\
         | model | precision | engine | threads | peak heap (all malloc) | Rust heap (counting allocator) | peak RSS (VmHWM) |\n|---|---|---|---|---|---|---|"
    );
    for m in &r.memory {
        let rust =
            if m.engine == "tract" { bytes(m.rust_peak) } else { format!("({} Rust side only)", bytes(m.rust_peak)) };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {rust} | {} |",
            m.model,
            m.precision,
            m.engine,
            m.threads,
            bytes(m.malloc_peak),
            bytes(m.rss_bytes)
        );
    }
    if let Some(note) = &r.shim_note {
        let _ = writeln!(s, "\nNo all-malloc peaks: {note}.");
    }
    let _ = writeln!(
        s,
        "\nPeak heap (all malloc) = highest sum of live malloc blocks (usable sizes) in the process, C++ included, counted by `xtask/heap_peak.c` preloaded into the probe. \
         The counting allocator sees only Rust allocations: everything for tract, almost nothing for ONNX Runtime."
    );
    heap_checks(s, r);
    sampler_memory(s, r);
}

/// The shim, the counting allocator and massif on the same configuration, when valgrind ran.
fn heap_checks(s: &mut String, r: &Report) {
    if r.heap_checks.is_empty() {
        return;
    }
    let _ = writeln!(s, "\nThe same peak measured three ways on the default model, 1 thread (massif = valgrind's largest `mem_heap_B`, requested sizes):\n\n| engine | heap shim | counting allocator | massif |\n|---|---|---|---|");
    for c in &r.heap_checks {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.engine,
            bytes(c.shim),
            c.counting.map(|b| bytes(Some(b))).unwrap_or_else(|| "—".into()),
            bytes(Some(c.massif))
        );
    }
}

/// One line on the real `sampler` run, from its `--report-json`.
fn sampler_memory(s: &mut String, r: &Report) {
    match &r.sampler {
        Some(v) => {
            let _ = writeln!(
                s,
                "\nThe `sampler` binary itself (embedded default model, 50-step DDIM, 1 thread, `--report-json`): peak heap {} (after load {}), peak RSS {}, {:.3} s in all, {:.2} ms per evaluation.\n",
                bytes(v["peak_heap_bytes"].as_u64()),
                bytes(v["peak_heap_after_load_bytes"].as_u64()),
                bytes(v["peak_rss_bytes"].as_u64()),
                v["total_seconds"].as_f64().unwrap_or(f64::NAN),
                1000.0 * v["eval_seconds"].as_f64().unwrap_or(f64::NAN) / v["evaluations"].as_f64().unwrap_or(f64::NAN)
            );
        }
        None => s.push_str("\nThe `sampler` run failed; no row for it.\n\n"),
    }
}

fn instructions(s: &mut String, r: &Report) {
    let _ =
        writeln!(s, "## Instruction counts\n\n### x86_64, callgrind (one evaluation of the default model, 1 thread)\n");
    if r.callgrind.is_empty() {
        let _ = writeln!(s, "Not measured: {}.\n", r.callgrind_note);
    } else {
        callgrind_table(s, r);
    }
    let _ = writeln!(s, "### aarch64, firmware-sim (qemu-user + our instruction-counting plugin)\n");
    match &r.firmware_sim {
        Some(fs) => firmware_sim_table(s, r, fs),
        None => {
            let _ = writeln!(
                s,
                "Not available: `target/firmware-sim/report.json` does not exist (run `cargo xtask sim`).\n"
            );
        }
    }
}

/// The callgrind rows (each run's count and their spread), and what the counts describe.
fn callgrind_table(s: &mut String, r: &Report) {
    let _ = writeln!(
        s,
        "| engine | precision | instructions per eval | runs | spread (max - min) / min |\n|---|---|---|---|---|"
    );
    for c in &r.callgrind {
        let runs: Vec<String> = c.runs.iter().map(|n| n.to_string()).collect();
        let (lo, hi) = (c.runs.iter().min().copied().unwrap_or(0), c.runs.iter().max().copied().unwrap_or(0));
        let spread =
            if c.runs.len() > 1 && lo > 0 { format!("{:.1e}", (hi - lo) as f64 / lo as f64) } else { "one run".into() };
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} M | {} | {spread} |",
            c.engine,
            c.precision,
            lo as f64 / 1e6,
            runs.join(", ")
        );
    }
    let avx512 = r.machine.iter().any(|(k, v)| k == "SIMD flags" && v.contains("avx512f"));
    if !r.callgrind.iter().any(|c| c.precision == "int8") {
        let _ = writeln!(s, "\nint8: not measured (no int8 rows in this run).");
    }
    let _ = writeln!(
        s,
        "\n{}: only instructions inside `measured_eval` (the second evaluation; the first one, loading and planning are excluded) are collected.{}\n",
        r.callgrind_note,
        if avx512 { " valgrind's virtual CPU has no AVX-512, so under it both engines run their AVX2/FMA kernels, and edgediff's int8 convolutions their AVX2 kernel instead of AVX-512 VNNI: these counts describe that code path, not the one the timings above used." } else { "" }
    );
}

/// firmware-sim's per-case instruction counts, and whether they were measured on the current
/// default model.
fn firmware_sim_table(s: &mut String, r: &Report, fs: &Value) {
    let cases = fs["cases"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(s, "| profile | qemu cpu | tract kernels | precision | threads | instructions per eval | eval spread | instructions per image ({} steps) |\n|---|---|---|---|---|---|---|---|", cases.first().and_then(|c| c["steps"].as_u64()).unwrap_or(0));
    for c in &cases {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2} M | {:.1e} | {:.1} M |",
            c["profile"].as_str().unwrap_or("?"),
            c["qemu_cpu"].as_str().unwrap_or("?"),
            c["tract_kind"].as_str().unwrap_or("?"),
            c["precision"].as_str().unwrap_or("?"),
            c["threads"].as_u64().unwrap_or(0),
            c["instructions_per_eval"].as_f64().unwrap_or(f64::NAN) / 1e6,
            c["instructions_per_eval_spread"].as_f64().unwrap_or(f64::NAN),
            c["instructions_per_image"].as_f64().unwrap_or(f64::NAN) / 1e6,
        );
    }
    let default_sha = r.models.first().and_then(|m| m["sha256"].as_str()).unwrap_or("");
    let sim_sha = fs["reference"]["model_sha256"].as_str().unwrap_or("");
    let _ = writeln!(
        s,
        "\nFrom `target/firmware-sim/report.json`: {}. Per eval = median over the run's evaluations.\n",
        staleness(sim_sha, default_sha)
    );
}

/// Whether firmware-sim measured the model that is the default now (compared by sha256).
fn staleness(sim_sha: &str, default_sha: &str) -> String {
    if sim_sha.is_empty() {
        "the report does not name its model's hash".to_string()
    } else if sim_sha == default_sha {
        format!("measured on the current default model (sha256 `{}`)", &sim_sha[..12.min(sim_sha.len())])
    } else {
        format!(
            "**stale**: measured on model sha256 `{}`, the current default model is `{}` (rerun `cargo xtask sim`)",
            &sim_sha[..12.min(sim_sha.len())],
            &default_sha[..12.min(default_sha.len())]
        )
    }
}

fn method(s: &mut String, r: &Report) {
    let args = if r.criterion_args.is_empty() {
        "criterion defaults (3 s warm-up, 5 s measurement)".to_string()
    } else {
        format!("`{}`", r.criterion_args.join(" "))
    };
    let _ = writeln!(
        s,
        "## Method\n\n\
         - Timings: `cargo bench -p edgediff --bench network_eval --bench sampling` ({args}); 50 samples per configuration for the default model, 10 (flat sampling) for the 35.7M net and the whole sample, 100 for the overhead loops. \
           Each engine is loaded, planned and checked (one evaluation, finite output of the right length) before timing; each call copies the input in and the prediction out.\n\
         - tract runs through `edgediff_runtime::Network` (what `sampler` uses; threads from a private pool per plan). ONNX Runtime through the `ort` crate: all graph optimisations, sequential execution, N intra-op threads, its other defaults (intra-op spinning on). Batch 1 throughout.\n\
         - Memory: `examples/bench_probe.rs eval`, one process per row: the engine loads the model file (tract as `sampler --model` does: read, decode, plan; ONNX Runtime: `commit_from_file`) and evaluates twice; nothing else touches the model. Heap: see above; RSS is the kernel's VmHWM.\n\
         - Instructions: `valgrind --tool=callgrind --toggle-collect='*measured_eval*'` on the same probe.\n\
         - Reproduce: `cargo xtask bench-report` (about {:.0} min here); `--quick` for a pipeline check; `--out FILE` to write elsewhere.\n",
        r.wall_seconds / 60.0
    );
}

pub(crate) fn cell(t: Option<&Timing>) -> String {
    match t {
        Some(x) => format!("{} [{} – {}]", time(x.median_ns), time(x.median_lo_ns), time(x.median_hi_ns)),
        None => "not measured".into(),
    }
}

fn time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn bytes(b: Option<u64>) -> String {
    match b {
        Some(b) if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / 1048576.0),
        Some(b) => format!("{:.1} KiB", b as f64 / 1024.0),
        None => "not measured".into(),
    }
}
