//! `cargo xtask bench-report [--quick] [--out FILE]`: runs the criterion suite (`benches/`), then
//! measures what criterion cannot, one process per configuration, and writes `BENCHMARKS.md`
//! (rendered by `bench_markdown`).
//!
//! - timings: criterion medians from `target/criterion/<group>/<function>/<param>/new/`, only
//!   files written by this run (older results are ignored), so every ratio compares engines
//!   measured in the same run;
//! - memory: `bench_probe eval` (examples/bench_probe.rs) loads one model on one engine and
//!   evaluates it; peak heap from our counting allocator (tract: all of it) or from valgrind's
//!   massif (ONNX Runtime: its C++ heap is invisible to Rust's allocator), peak RSS from VmHWM;
//!   plus one real `sampler` run (50-step DDIM, embedded model);
//! - x86 instructions: callgrind, collecting only inside `bench_probe`'s `measured_eval`
//!   (one evaluation after a warm-up one), one thread;
//! - aarch64 instructions: firmware-sim's `target/firmware-sim/report.json`, when present;
//! - the product on a board (`bench_board`): the sampler's whole-run peak against its predicted
//!   weights + activations, the 35.7M int8 net on the 64 MiB board profile, binary sizes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench_board::{Board, SizeRow, WholeRun};
use crate::bench_env::{loadavg, machine, utc_now, valgrind_version, versions};
use crate::bench_markdown;
use crate::bench_probe::{
    build_heap_shim, callgrind_count, json_of, massif_peak, probe_eval, with_heap_shim, ProbeEval,
};

/// One criterion result.
#[derive(Debug, Clone)]
pub struct Timing {
    pub group: String,
    pub function: String,
    pub param: Option<String>,
    /// Median time per iteration and its 95% confidence interval, nanoseconds.
    pub median_ns: f64,
    pub median_lo_ns: f64,
    pub median_hi_ns: f64,
}

/// Peak memory of one configuration, measured in its own process.
#[derive(Debug, Clone)]
pub struct MemoryRow {
    pub model: String,
    pub precision: String,
    pub engine: String,
    pub threads: usize,
    /// Peak of all live malloc blocks, C++ included (xtask/heap_peak.c, LD_PRELOAD).
    pub malloc_peak: Option<u64>,
    /// Peak seen by Rust's counting allocator (all of tract; only the Rust side of ORT).
    pub rust_peak: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// The heap methods compared on one configuration (the default model, 1 thread).
#[derive(Debug, Clone)]
pub struct HeapCheck {
    pub engine: String,
    pub shim: Option<u64>,
    pub counting: Option<u64>,
    pub massif: u64,
}

/// Instructions of one evaluation under callgrind.
#[derive(Debug, Clone)]
pub struct InstrRow {
    pub engine: String,
    pub precision: String,
    pub runs: Vec<u64>,
}

/// Everything the report shows.
pub struct Report {
    pub started: String,
    pub quick: bool,
    pub criterion_args: Vec<String>,
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub load_before: String,
    pub load_after: String,
    pub wall_seconds: f64,
    pub models: Vec<Value>,
    pub timings: Vec<Timing>,
    pub memory: Vec<MemoryRow>,
    pub sampler: Option<Value>,
    pub heap_checks: Vec<HeapCheck>,
    pub shim_note: Option<String>,
    pub callgrind: Vec<InstrRow>,
    pub callgrind_note: String,
    pub firmware_sim: Option<Value>,
    pub whole_runs: Vec<WholeRun>,
    pub board: Option<Board>,
    pub sizes: Vec<SizeRow>,
}

/// What `bench-report` was asked for on its command line.
struct Options {
    /// Short criterion runs, for checking the pipeline.
    quick: bool,
    /// Where the markdown goes.
    out: PathBuf,
}

/// The programs every measurement runs: the ONNX Runtime library and the measurement helper.
struct Probe {
    lib: PathBuf,
    /// `target/release/examples/bench_probe`.
    exe: PathBuf,
}

impl Probe {
    /// `bench_probe eval` for one engine configuration.
    fn eval(&self, engine: &str, model: &str, threads: usize) -> ProbeEval {
        probe_eval(&self.exe, &self.lib, engine, model, threads)
    }
}

/// Runs every measurement listed in the module doc and writes the report.
pub fn run(args: &[String]) -> Result<()> {
    let options = parse_args(args)?;
    let began = std::time::Instant::now();
    let start = SystemTime::now();
    let root = crate::root();
    let cargo = crate::cargo();
    let probe = build_probe(&root, &cargo)?;
    let started = utc_now()?;
    let load_before = loadavg();

    let (models, ort_version) = bench_models(&probe)?;
    let criterion_args = criterion_args(options.quick);
    let timings = run_criterion(&root, &cargo, &probe.lib, &criterion_args, start)?;

    crate::step("peak memory, one process per configuration");
    let shim = build_heap_shim(&root);
    if let Err(e) = &shim {
        eprintln!("    no malloc peaks: {e:#}");
    }
    let have_valgrind = crate::have("valgrind");
    let (memory, heap_checks) = measure_memory(&probe, &models, shim.as_deref().ok(), have_valgrind)?;
    let sampler = sampler_run(&root);
    let (callgrind, callgrind_note) = count_instructions(&probe, &models, have_valgrind)?;
    let firmware_sim = read_firmware_sim(&root);
    let whole_runs = crate::bench_board::whole_runs(&root, &models);
    let board = crate::bench_board::board_64mib(&root, &models);
    let sizes = crate::bench_board::binary_sizes(&root);

    let report = Report {
        started,
        quick: options.quick,
        criterion_args,
        machine: machine(),
        versions: versions(&root, ort_version.as_deref()),
        load_before,
        load_after: loadavg(),
        wall_seconds: began.elapsed().as_secs_f64(),
        models,
        timings,
        memory,
        sampler,
        heap_checks,
        shim_note: shim.err().map(|e| format!("{e:#}")),
        callgrind,
        callgrind_note,
        firmware_sim,
        whole_runs,
        board,
        sizes,
    };
    let text = bench_markdown::render(&report);
    edgediff_io::write_atomic(&options.out, text.as_bytes())?;
    crate::step(&format!("wrote {} in {:.0} s", options.out.display(), report.wall_seconds));
    Ok(())
}

/// `[--quick] [--out FILE]`; the default output is `BENCHMARKS.md` at the repository root.
fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options { quick: false, out: crate::root().join("BENCHMARKS.md") };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => options.quick = true,
            "--out" => options.out = PathBuf::from(it.next().context("--out needs a file name")?),
            other => bail!("bench-report: unknown argument {other} (expected --quick, --out FILE)"),
        }
    }
    Ok(options)
}

/// Fetches ONNX Runtime if missing and builds the measurement helper and the sampler.
fn build_probe(root: &Path, cargo: &str) -> Result<Probe> {
    crate::step("ONNX Runtime library");
    let lib = crate::ort_library_path();
    if !lib.exists() {
        crate::fetch_ort(&lib)?;
    }
    crate::step("build the measurement helper and the sampler");
    crate::run(Command::new(cargo).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "edgediff",
        "--example",
        "bench_probe",
        "--bin",
        "sampler",
    ]))?;
    Ok(Probe { lib, exe: root.join("target/release/examples/bench_probe") })
}

/// The models measured (the default model first) and the ONNX Runtime version, as the probe
/// lists them; it exports the large bench model on first use.
fn bench_models(probe: &Probe) -> Result<(Vec<Value>, Option<String>)> {
    crate::step("bench models (exports the 35.7M-param U-Net into target/bench-models/ if missing)");
    let info = json_of(Command::new(&probe.exe).arg("info").env("ORT_DYLIB_PATH", &probe.lib))?;
    let models = info["models"].as_array().cloned().unwrap_or_default();
    Ok((models, info["ort_version"].as_str().map(str::to_string)))
}

/// Criterion's flags: shorter warm-up and measurement in quick mode, its defaults otherwise.
fn criterion_args(quick: bool) -> Vec<String> {
    if quick {
        ["--warm-up-time", "1", "--measurement-time", "2"].map(String::from).to_vec()
    } else {
        vec![]
    }
}

/// Runs the criterion suite and reads back the results it wrote since `start`.
fn run_criterion(root: &Path, cargo: &str, lib: &Path, args: &[String], start: SystemTime) -> Result<Vec<Timing>> {
    crate::step("criterion suite (benches/network_eval.rs, benches/sampling.rs)");
    crate::run(
        Command::new(cargo)
            .current_dir(root)
            .env("ORT_DYLIB_PATH", lib)
            .args(["bench", "-p", "edgediff", "--bench", "network_eval", "--bench", "sampling", "--"])
            .args(args),
    )?;
    read_criterion(&root.join("target/criterion"), start)
}

/// Peak memory of every (model, engine, threads) configuration, one process each; with
/// valgrind, also the heap methods compared on the default model at 1 thread.
fn measure_memory(
    probe: &Probe,
    models: &[Value],
    shim: Option<&Path>,
    have_valgrind: bool,
) -> Result<(Vec<MemoryRow>, Vec<HeapCheck>)> {
    let mut memory = Vec::new();
    let mut heap_checks = Vec::new();
    for (index, m) in models.iter().enumerate() {
        let (key, path) = (m["key"].as_str().unwrap_or("?"), m["path"].as_str().unwrap_or_default());
        for engine in ["tract", "ort"] {
            for threads in [1usize, 2] {
                let eval = probe.eval(engine, path, threads);
                let (native, malloc_peak) = peak_heap(&eval, shim)?;
                let rust_peak = native["peak_heap_bytes"].as_u64();
                let row = MemoryRow {
                    model: key.into(),
                    precision: m["precision"].as_str().unwrap_or("?").into(),
                    engine: engine.into(),
                    threads,
                    malloc_peak,
                    rust_peak,
                    rss_bytes: native["peak_rss_bytes"].as_u64(),
                };
                // massif (slow: minutes on the 35.7M net) checks the shim on the default model.
                if index == 0 && threads == 1 && have_valgrind {
                    let counting = (engine == "tract").then_some(rust_peak).flatten();
                    let massif = massif_peak(&eval)?;
                    heap_checks.push(HeapCheck { engine: engine.into(), shim: malloc_peak, counting, massif });
                }
                memory.push(row);
            }
        }
    }
    Ok((memory, heap_checks))
}

/// Runs one configuration natively: its JSON, and its malloc peak when the shim was built.
fn peak_heap(eval: &ProbeEval, shim: Option<&Path>) -> Result<(Value, Option<u64>)> {
    match shim {
        Some(so) => {
            let (v, peak) = with_heap_shim(eval, so)?;
            Ok((v, Some(peak)))
        }
        None => Ok((json_of(&mut eval.command())?, None)),
    }
}

/// Callgrind counts for every precision of the default model (tract twice, to show the
/// spread; ONNX Runtime once), and the note the report prints with them.
fn count_instructions(probe: &Probe, models: &[Value], have_valgrind: bool) -> Result<(Vec<InstrRow>, String)> {
    crate::step("callgrind: instructions of one evaluation of the default model, 1 thread");
    if !have_valgrind {
        return Ok((Vec::new(), "valgrind not installed: no callgrind counts".into()));
    }
    let mut callgrind = Vec::new();
    // Every precision of the default model (fp32 and its int8 file).
    let default_key = models.first().context("no bench models")?["key"].clone();
    for model in models.iter().filter(|m| m["key"] == default_key) {
        let path = model["path"].as_str().unwrap_or_default();
        let precision = model["precision"].as_str().unwrap_or("?").to_string();
        for (engine, runs) in [("tract", 2), ("ort", 1)] {
            let eval = probe.eval(engine, path, 1);
            let counts = (0..runs).map(|_| callgrind_count(&eval)).collect::<Result<Vec<u64>>>()?;
            callgrind.push(InstrRow { engine: engine.into(), precision: precision.clone(), runs: counts });
        }
    }
    Ok((callgrind, valgrind_version()))
}

/// firmware-sim's last report (`target/firmware-sim/report.json`), if there is a readable one.
fn read_firmware_sim(root: &Path) -> Option<Value> {
    std::fs::read_to_string(root.join("target/firmware-sim/report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// The real product: `sampler` with its embedded model, 50-step DDIM, one thread.
fn sampler_run(root: &Path) -> Option<Value> {
    let args = ["--steps", "50", "--threads", "1"].map(std::ffi::OsStr::new);
    crate::bench_board::sampler_report(root, &args).map_err(|e| eprintln!("    {e:#}; its row is left out")).ok()
}

/// Criterion results written since `since`, by `benchmark.json` id.
fn read_criterion(dir: &Path, since: SystemTime) -> Result<Vec<Timing>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().is_some_and(|n| n == "estimates.json")
                && p.parent().is_some_and(|q| q.ends_with("new"))
            {
                let fresh = e.metadata().and_then(|m| m.modified()).map(|t| t >= since).unwrap_or(false);
                if fresh {
                    found.push(timing(&p)?);
                }
            }
        }
    }
    found.sort_by(|a, b| (&a.group, &a.function, &a.param).cmp(&(&b.group, &b.function, &b.param)));
    if found.is_empty() {
        bail!("criterion wrote no results under {}", dir.display());
    }
    Ok(found)
}

fn timing(estimates: &Path) -> Result<Timing> {
    let read = |p: &Path| -> Result<Value> {
        Ok(serde_json::from_str(&std::fs::read_to_string(p).with_context(|| p.display().to_string())?)?)
    };
    let est = read(estimates)?;
    let id = read(&estimates.with_file_name("benchmark.json"))?;
    let median = &est["median"];
    let num = |v: &Value| v.as_f64().with_context(|| format!("{}: malformed median", estimates.display()));
    Ok(Timing {
        group: id["group_id"].as_str().unwrap_or("?").to_string(),
        function: id["function_id"].as_str().unwrap_or("").to_string(),
        param: id["value_str"].as_str().map(str::to_string),
        median_ns: num(&median["point_estimate"])?,
        median_lo_ns: num(&median["confidence_interval"]["lower_bound"])?,
        median_hi_ns: num(&median["confidence_interval"]["upper_bound"])?,
    })
}
