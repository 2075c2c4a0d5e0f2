//! The `BENCHMARKS.md` sections of [`crate::bench_board`]'s checks and the heap ratio against
//! ONNX Runtime: whole-run peak against the bound, ours vs ONNX Runtime, the 64 MiB board, the
//! binary sizes. Each states its target and whether this run met it.

use std::fmt::Write;

use crate::bench_board::{Board, SizeRow, WholeRun};
use crate::bench_report::{MemoryRow, Report};

/// Whole-run peak heap / (weights + activations) must stay at or below this.
const BOUND_RATIO: f64 = 1.25;
/// Our peak heap / ONNX Runtime's on the same file must stay at or below this.
const ORT_RATIO: f64 = 0.75;

pub fn render(s: &mut String, r: &Report) {
    whole_runs(s, &r.whole_runs);
    versus_ort(s, &r.memory);
    board(s, r.board.as_ref());
    sizes(s, &r.sizes);
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / 1048576.0)
}

fn whole_runs(s: &mut String, rows: &[WholeRun]) {
    let _ = writeln!(
        s,
        "## Whole-run peak heap against weights + activations (`sampler --steps 2 --threads 1 --report-json`)\n\n\
         | model | precision | peak heap (load included) | weights | activations (peak live) | peak / (W + A) | ≤ {BOUND_RATIO} | peak RSS |\n|---|---|---|---|---|---|---|---|"
    );
    for w in rows {
        let bound = w.weights + w.activations;
        let ratio = w.peak_heap as f64 / bound.max(1) as f64;
        let rss = w.rss.map(mib).unwrap_or_else(|| "not measured".into());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {ratio:.2} | {} | {rss} |",
            w.model,
            w.precision,
            mib(w.peak_heap),
            mib(w.weights),
            mib(w.activations),
            met(ratio <= BOUND_RATIO)
        );
    }
    let _ = writeln!(
        s,
        "\nWeights and activations are the sampler's own prediction (`sampler info --memory`): the initializers' bytes and the \
         largest set of activations live at once in the planned graph. The peak is the counting allocator's over the whole run. \
         On the small default model the fixed cost of tract's graph and plan (about 1.5 MiB) is a large share of the bound.\n"
    );
}

fn versus_ort(s: &mut String, memory: &[MemoryRow]) {
    let _ = writeln!(
        s,
        "## Peak heap against ONNX Runtime (all malloc, 1 thread, rows of the table above)\n\n\
         | model | precision | ours | ONNX Runtime | ours / ORT | ≤ {ORT_RATIO} |\n|---|---|---|---|---|---|"
    );
    for ours in memory.iter().filter(|m| m.engine == "tract" && m.threads == 1) {
        let peer = memory
            .iter()
            .find(|m| m.engine == "ort" && m.threads == 1 && m.model == ours.model && m.precision == ours.precision);
        let (Some(a), Some(b)) = (ours.malloc_peak, peer.and_then(|p| p.malloc_peak)) else { continue };
        let ratio = a as f64 / b as f64;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {ratio:.2} | {} |",
            ours.model,
            ours.precision,
            mib(a),
            mib(b),
            met(ratio <= ORT_RATIO)
        );
    }
    s.push('\n');
}

fn board(s: &mut String, board: Option<&Board>) {
    let _ = writeln!(s, "## The 64 MiB board (firmware-sim `a53-64mib`: cortex-a53, `--memory-budget 64MiB`)\n");
    let Some(b) = board else {
        let _ = writeln!(s, "Not run: no 35.7M int8 bench model.\n");
        return;
    };
    match &b.case {
        Ok(c) => {
            let gates: Vec<String> = c["checks"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|g| {
                            format!("{}: {}", g["gate"].as_str().unwrap_or("?"), g["detail"].as_str().unwrap_or(""))
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "`{}`, seed 0, {} DDIM steps, {} thread: **{}**. Peak heap {} of a {} budget; {:.2} M instructions per evaluation.\n\n- {}\n",
                b.model,
                c["steps"],
                c["threads"],
                if c["passed"] == true { "passed" } else { "FAILED" },
                c["peak_heap_bytes"].as_u64().map(mib).unwrap_or_default(),
                c["memory_budget_bytes"].as_u64().map(mib).unwrap_or_default(),
                c["instructions_per_eval"].as_f64().unwrap_or(f64::NAN) / 1e6,
                gates.join("\n- ")
            );
            let _ = writeln!(
                s,
                "The reference is the x86_64 sampler's output on the same int8 file (the net has random weights, so int8 against fp32 \
                 would say nothing of quantisation quality); the gates are the profile's int8 PSNR, on the model's value range \
                 [-1, 1], and the x0 bytes. The int8 sums are exact on both CPUs and the file's float layers run in the fixed \
                 order (`edgediff.float_order`), so the emulated board gives the x86_64 bytes (PSNR inf). In tract's per-CPU \
                 order the random net's x0 (about ±12) differed enough across CPUs to fail the 35 dB gate.\n"
            );
        }
        Err(e) => {
            let _ = writeln!(s, "Not run: {e}.\n");
        }
    }
}

fn sizes(s: &mut String, rows: &[SizeRow]) {
    let _ = writeln!(
        s,
        "## Binary size (`cargo build --config .cargo/board.toml --profile release-small --bin sampler --no-default-features`, stripped)\n\n\
         | target | bytes | ≤ 8 MB (aarch64) |\n|---|---|---|"
    );
    for r in rows {
        let (size, goal) = match &r.stripped_bytes {
            Ok(b) => (
                format!("{} ({:.2} MB)", b, *b as f64 / 1e6),
                if r.target.starts_with("aarch64") { met(*b <= 8_000_000) } else { "—" },
            ),
            Err(e) => (format!("not built: {e}"), "—"),
        };
        let _ = writeln!(s, "| {} | {size} | {goal} |", r.target);
    }
    for r in rows {
        if let Some(text) = &r.bloat {
            let _ = writeln!(
                s,
                "\n`cargo bloat --crates` ({}, the same build before stripping):\n\n```text\n{}```",
                r.target, text
            );
        }
    }
    if rows.iter().all(|r| r.bloat.is_none()) {
        let _ = writeln!(s, "\nNo breakdown: `cargo install cargo-bloat` adds one.");
    }
    let _ = writeln!(
        s,
        "\nThe embedded default model adds its file's {} bytes (the `embedded-model` feature, on by default).\n",
        std::fs::metadata(crate::root().join("models/sprites-cond.onnx")).map(|m| m.len()).unwrap_or(0)
    );
}
