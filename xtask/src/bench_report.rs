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
//! - aarch64 instructions: firmware-sim's `target/firmware-sim/report.json`, when present.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::bench_markdown;
use crate::bench_probe::{build_heap_shim, callgrind_count, json_of, massif_peak, probe_eval, scratch, with_heap_shim};

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
}

pub fn run(args: &[String]) -> Result<()> {
    let (mut quick, mut out) = (false, crate::root().join("BENCHMARKS.md"));
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = PathBuf::from(it.next().context("--out needs a file name")?),
            other => bail!("bench-report: unknown argument {other} (expected --quick, --out FILE)"),
        }
    }
    let began = std::time::Instant::now();
    let start = SystemTime::now();
    let root = crate::root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());

    crate::step("ONNX Runtime library");
    let lib = crate::ort_library_path();
    if !lib.exists() {
        crate::fetch_ort(&lib)?;
    }
    crate::step("build the measurement helper and the sampler");
    crate::run(Command::new(&cargo).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "edgediff",
        "--example",
        "bench_probe",
        "--bin",
        "sampler",
    ]))?;
    let probe = root.join("target/release/examples/bench_probe");
    let started = utc_now()?;
    let load_before = loadavg();

    crate::step("bench models (exports the 35.7M-param U-Net into target/bench-models/ if missing)");
    let info = json_of(Command::new(&probe).arg("info").env("ORT_DYLIB_PATH", &lib))?;
    let models: Vec<Value> = info["models"].as_array().cloned().unwrap_or_default();

    let criterion_args: Vec<String> =
        if quick { ["--warm-up-time", "1", "--measurement-time", "2"].map(String::from).to_vec() } else { vec![] };
    crate::step("criterion suite (benches/network_eval.rs, benches/sampling.rs)");
    crate::run(
        Command::new(&cargo)
            .current_dir(&root)
            .env("ORT_DYLIB_PATH", &lib)
            .args(["bench", "-p", "edgediff", "--bench", "network_eval", "--bench", "sampling", "--"])
            .args(&criterion_args),
    )?;
    let timings = read_criterion(&root.join("target/criterion"), start)?;

    crate::step("peak memory, one process per configuration");
    let shim = build_heap_shim(&root);
    if let Err(e) = &shim {
        eprintln!("    no malloc peaks: {e:#}");
    }
    let have_valgrind = crate::have("valgrind");
    let mut memory = Vec::new();
    let mut heap_checks = Vec::new();
    for (index, m) in models.iter().enumerate() {
        let (key, path) = (m["key"].as_str().unwrap_or("?"), m["path"].as_str().unwrap_or_default());
        for engine in ["tract", "ort"] {
            for threads in [1usize, 2] {
                let eval = probe_eval(&probe, &lib, engine, path, threads);
                let (native, malloc_peak) = match &shim {
                    Ok(so) => {
                        let (v, peak) = with_heap_shim(&eval, so)?;
                        (v, Some(peak))
                    }
                    Err(_) => (json_of(&mut eval.command())?, None),
                };
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
                    heap_checks.push(HeapCheck {
                        engine: engine.into(),
                        shim: malloc_peak,
                        counting,
                        massif: massif_peak(&eval)?,
                    });
                }
                memory.push(row);
            }
        }
    }
    let sampler = sampler_run(&root)?;

    crate::step("callgrind: instructions of one evaluation of the default model, 1 thread");
    let mut callgrind = Vec::new();
    let callgrind_note = if have_valgrind {
        // Every precision of the default model (fp32 and its int8 file).
        let default_key = models.first().context("no bench models")?["key"].clone();
        for model in models.iter().filter(|m| m["key"] == default_key) {
            let path = model["path"].as_str().unwrap_or_default();
            let precision = model["precision"].as_str().unwrap_or("?").to_string();
            for (engine, runs) in [("tract", 2), ("ort", 1)] {
                let eval = probe_eval(&probe, &lib, engine, path, 1);
                let counts = (0..runs).map(|_| callgrind_count(&eval)).collect::<Result<Vec<u64>>>()?;
                callgrind.push(InstrRow { engine: engine.into(), precision: precision.clone(), runs: counts });
            }
        }
        valgrind_version()
    } else {
        "valgrind not installed: no callgrind counts".into()
    };

    let firmware_sim = std::fs::read_to_string(root.join("target/firmware-sim/report.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let report = Report {
        started,
        quick,
        criterion_args,
        machine: machine(),
        versions: versions(&root, info["ort_version"].as_str()),
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
    };
    let text = bench_markdown::render(&report);
    edgediff_io::write_atomic(&out, text.as_bytes())?;
    crate::step(&format!("wrote {} in {:.0} s", out.display(), report.wall_seconds));
    Ok(())
}

/// The real product: `sampler` with its embedded model, 50-step DDIM, one thread.
fn sampler_run(root: &Path) -> Result<Option<Value>> {
    let (png, json) = (scratch("sample.png"), scratch("sampler.json"));
    let status = Command::new(root.join("target/release/sampler"))
        .arg(&png)
        .args(["--steps", "50", "--threads", "1", "--quiet", "--report-json"])
        .arg(&json)
        .status()
        .context("cannot start sampler")?;
    std::fs::remove_file(&png).ok();
    if !status.success() {
        eprintln!("    sampler failed ({status}); its row is left out");
        return Ok(None);
    }
    let text = std::fs::read_to_string(&json)?;
    std::fs::remove_file(&json).ok();
    Ok(Some(serde_json::from_str(&text)?))
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

fn capture(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn utc_now() -> Result<String> {
    let s = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    if s == "unknown" {
        bail!("cannot read the date");
    }
    Ok(s)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn valgrind_version() -> String {
    capture("valgrind", &["--version"])
}

fn machine() -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim().to_string())
    };
    let flags = field("flags").unwrap_or_default();
    let simd: Vec<&str> = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|x| x == *f))
        .collect();
    let cores = std::thread::available_parallelism().map(|n| n.to_string()).unwrap_or_else(|_| "unknown".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string()));
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())));
    vec![
        ("CPU".into(), field("model name").unwrap_or_else(|| "unknown".into())),
        ("cores available".into(), cores),
        ("SIMD flags".into(), simd.join(" ")),
        (
            "memory".into(),
            mem.and_then(|k| k.parse::<u64>().ok())
                .map(|k| format!("{:.1} GiB", k as f64 / 1048576.0))
                .unwrap_or_else(|| "unknown".into()),
        ),
        ("OS".into(), format!("{} (kernel {})", os.unwrap_or_else(|| "unknown".into()), capture("uname", &["-r"]))),
    ]
}

fn versions(root: &Path, ort: Option<&str>) -> Vec<(String, String)> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let locked = |name: &str| -> String {
        let header = format!("name = \"{name}\"");
        let mut lines = lock.lines();
        while let Some(l) = lines.next() {
            if l.trim() == header {
                if let Some(v) = lines.next().and_then(|v| v.trim().strip_prefix("version = ")) {
                    return v.trim_matches('"').to_string();
                }
            }
        }
        "unknown".into()
    };
    vec![
        ("tract".into(), format!("tract-onnx {}", locked("tract-onnx"))),
        ("ONNX Runtime".into(), format!("{} (via ort {})", ort.unwrap_or("unknown"), locked("ort"))),
        ("rustc".into(), capture("rustc", &["-V"])),
        ("criterion".into(), locked("criterion")),
        ("valgrind".into(), valgrind_version()),
    ]
}

