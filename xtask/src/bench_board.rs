//! The bench report's checks of the product as a board runs it: the `sampler` binary's whole-run
//! peak heap against its own prediction of weights + live activations, per model; the 35.7M int8
//! net on the 64 MiB board profile (firmware-sim `a53-64mib`, two DDIM steps, its parity gate);
//! and the size of the `release-small` sampler without the embedded model, x86_64 and aarch64.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bench_probe::scratch;

/// One `sampler --report-json` run: its measured peaks and its prediction.
#[derive(Debug, Clone)]
pub struct WholeRun {
    pub model: String,
    pub precision: String,
    pub peak_heap: u64,
    pub weights: u64,
    pub activations: u64,
    pub rss: Option<u64>,
}

/// `sampler` on each bench model, two DDIM steps, one thread: whole-run peak heap (load
/// included) and the weights and activations it predicted.
pub fn whole_runs(root: &Path, models: &[Value]) -> Vec<WholeRun> {
    crate::step("sampler whole-run peak heap per model (2 steps, 1 thread)");
    let mut rows = Vec::new();
    for m in models {
        let (Some(key), Some(precision), Some(path)) = (m["key"].as_str(), m["precision"].as_str(), m["path"].as_str())
        else {
            continue;
        };
        let args = ["--model", path, "--steps", "2", "--threads", "1"].map(OsStr::new);
        match sampler_report(root, &args) {
            Ok(v) => rows.push(WholeRun {
                model: key.into(),
                precision: precision.into(),
                peak_heap: v["peak_heap_bytes"].as_u64().unwrap_or(0),
                weights: v["predicted_bytes"]["weights"].as_u64().unwrap_or(0),
                activations: v["predicted_bytes"]["activations"].as_u64().unwrap_or(0),
                rss: v["peak_rss_bytes"].as_u64(),
            }),
            Err(e) => eprintln!("    {key} {precision}: {e:#}; no row"),
        }
    }
    rows
}

/// The `--report-json` of one `sampler ARGS --quiet` run (its PNG discarded).
pub fn sampler_report(root: &Path, args: &[&OsStr]) -> Result<Value> {
    let (png, json) = (scratch("report-run.png"), scratch("report-run.json"));
    let out = Command::new(root.join("target/release/sampler"))
        .args(args)
        .args(["--quiet", "--report-json"])
        .arg(&json)
        .arg(&png)
        .output()
        .context("cannot start sampler")?;
    std::fs::remove_file(&png).ok();
    if !out.status.success() {
        bail!("sampler failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = std::fs::read_to_string(&json)?;
    std::fs::remove_file(&json).ok();
    Ok(serde_json::from_str(&text)?)
}

/// The 64 MiB board's result: firmware-sim's case for the 35.7M int8 net.
#[derive(Debug, Clone)]
pub struct Board {
    pub model: String,
    /// firmware-sim's report case, or why there is none.
    pub case: Result<Value, String>,
}

/// The int8 bench net's file (`bench-report` exports it).
const BENCH_INT8_MODEL: &str = "target/bench-models/ddpm-cifar10-35.7m-seed0-int8-v2.onnx";

/// `cargo xtask board [MODEL]`: the board check alone, on MODEL (default: the 35.7M int8 bench
/// net, which `cargo xtask bench-report` exports); fails if a gate does.
pub fn board_command(args: &[String]) -> Result<()> {
    let root = crate::root();
    let model = args.first().map(PathBuf::from).unwrap_or_else(|| root.join(BENCH_INT8_MODEL));
    if !model.is_file() {
        bail!(
            "{} does not exist: give an int8 model, or run `cargo xtask bench-report` to export the bench net",
            model.display()
        );
    }
    let case = run_board(&root, &model)?;
    println!("{}", serde_json::to_string_pretty(&case)?);
    if case["passed"] != true {
        bail!("a gate failed on the 64 MiB board");
    }
    Ok(())
}

/// The 35.7M int8 net on firmware-sim's `a53-64mib` profile: a reference made by the x86_64
/// sampler from the same file (seed 0, two DDIM steps), then the aarch64 sampler under qemu with
/// `--memory-budget 64MiB`, gated on x_T, the PSNR of x0 against the reference and the peak heap.
pub fn board_64mib(root: &Path, models: &[Value]) -> Option<Board> {
    crate::step("64 MiB board: the 35.7M int8 net under qemu (firmware-sim a53-64mib, 2 steps)");
    let model = models.iter().find(|m| m["key"] == "ddpm35m" && m["precision"] == "int8")?;
    let path = PathBuf::from(model["path"].as_str()?);
    let case = run_board(root, &path).map_err(|e| format!("{e:#}"));
    if let Err(e) = &case {
        eprintln!("    not run: {e}");
    }
    Some(Board { model: path.display().to_string(), case })
}

fn run_board(root: &Path, model: &Path) -> Result<Value> {
    if !crate::have(crate::QEMU) {
        bail!("{} is not installed (cargo xtask test installs it)", crate::QEMU);
    }
    let dir = root.join("target/bench-report/board-64mib");
    let reference = dir.join("reference");
    write_reference(root, model, &reference, 2)?;
    let cargo = crate::cargo();
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--quiet", "--release", "-p", "edgediff-firmware-sim", "--", "run"])
        .args(["--profile", "a53-64mib", "--precision", "int8", "--model"])
        .arg(model)
        .arg("--reference-model")
        .arg(model)
        .arg("--reference")
        .arg(&reference)
        .arg("--out")
        .arg(dir.join("sim"))
        .status()
        .context("cannot start firmware-sim")?;
    let report: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("sim/report.json"))?)?;
    let case = report["cases"].get(0).cloned().context("firmware-sim's report has no case")?;
    if !status.success() && case["passed"] != true {
        eprintln!("    firmware-sim: a gate failed on the 64 MiB board");
    }
    Ok(case)
}

/// A firmware-sim reference (x_T, x0, reference.json) for `model` from the x86_64 sampler:
/// seed 0, `steps` DDIM steps, leading spacing, eta 0.
fn write_reference(root: &Path, model: &Path, dir: &Path, steps: u32) -> Result<()> {
    let seed_dir = dir.join("seed-0");
    std::fs::create_dir_all(&seed_dir)?;
    let steps_text = steps.to_string();
    let status = Command::new(root.join("target/release/sampler"))
        .arg("--model")
        .arg(model)
        .args(["--seed", "0", "--steps", &steps_text, "--threads", "1", "--quiet", "--save-init-noise"])
        .arg(seed_dir.join("x_T.npy"))
        .arg("--save-raw")
        .arg(seed_dir.join("x0.npy"))
        .arg(seed_dir.join("sample.png"))
        .status()
        .context("cannot start sampler")?;
    if !status.success() {
        bail!("the x86_64 sampler failed to make the reference ({status})");
    }
    let reference = json!({
        "command": format!("sampler --model {} --seed 0 --steps {steps}", model.display()),
        "device": "x86_64 sampler (the same int8 file)",
        "model_name": model.file_stem().map(|s| s.to_string_lossy().into_owned()),
        "onnx": { "sha256": edgediff_io::sha256_file(model)? },
        "steps": steps,
        "seeds": [0],
        "scheduler": "ddim",
        "spacing": "leading",
        "eta": 0.0,
        "files": [{ "seed": 0, "x_T": "seed-0/x_T.npy", "x0": "seed-0/x0.npy", "png": "seed-0/sample.png" }],
    });
    edgediff_io::write_atomic(&dir.join("reference.json"), serde_json::to_string_pretty(&reference)?.as_bytes())?;
    Ok(())
}

/// The board build's extra cargo configuration (no unwind tables, non-PIE), and the target
/// folder it sets.
const BOARD_CONFIG: &str = ".cargo/board.toml";
const BOARD_TARGET_DIR: &str = "target/board";

/// The stripped size of one `release-small` sampler, and where its bytes go.
#[derive(Debug, Clone)]
pub struct SizeRow {
    pub target: String,
    pub stripped_bytes: Result<u64, String>,
    /// `cargo bloat --crates` (its text), when cargo-bloat is installed.
    pub bloat: Option<String>,
}

/// `cargo build --config .cargo/board.toml --profile release-small --bin sampler
/// --no-default-features` for x86_64 and aarch64, unstripped (so `cargo bloat` can read the symbols of the very same build), then
/// measured after `strip --strip-all`, which is what the profile's `strip = true` does.
pub fn binary_sizes(root: &Path) -> Vec<SizeRow> {
    crate::step("binary sizes: release-small sampler without the embedded model (x86_64, aarch64)");
    let targets = [("x86_64-unknown-linux-gnu", "strip"), (crate::AARCH64_TARGET, "aarch64-linux-gnu-strip")];
    targets
        .iter()
        .map(|&(target, strip)| {
            let stripped_bytes = build_small(root, target, strip).map_err(|e| format!("{e:#}"));
            let bloat = stripped_bytes.is_ok().then(|| bloat(root, target)).flatten();
            SizeRow { target: target.into(), stripped_bytes, bloat }
        })
        .collect()
}

/// The cargo arguments of the measured build.
fn small_args(target: &str) -> Vec<String> {
    let args = [
        "--config",
        BOARD_CONFIG,
        "--profile",
        "release-small",
        "--bin",
        "sampler",
        "--no-default-features",
        "--target",
        target,
    ];
    args.map(String::from).to_vec()
}

fn small_build(root: &Path, cargo_subcommand: &[&str], target: &str) -> Command {
    let cargo = crate::cargo();
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .env("CARGO_PROFILE_RELEASE_SMALL_STRIP", "false")
        .env(crate::AARCH64_LINKER_ENV, crate::CROSS_GCC)
        .args(cargo_subcommand)
        .args(small_args(target));
    cmd
}

fn build_small(root: &Path, target: &str, strip: &str) -> Result<u64> {
    crate::run(&mut small_build(root, &["build"], target))?;
    let bin = root.join(BOARD_TARGET_DIR).join(target).join("release-small/sampler");
    let stripped = scratch(&format!("sampler-{target}-stripped"));
    let out = Command::new(strip).arg("--strip-all").arg("-o").arg(&stripped).arg(&bin).output();
    let out = out.with_context(|| format!("cannot start {strip}"))?;
    if !out.status.success() {
        bail!("{strip}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let bytes = std::fs::metadata(&stripped)?.len();
    std::fs::remove_file(&stripped).ok();
    Ok(bytes)
}

/// `cargo bloat --crates` of the build just made (same profile and flags: no rebuild).
fn bloat(root: &Path, target: &str) -> Option<String> {
    let out = small_build(root, &["bloat", "--crates", "-n", "15"], target).output().ok()?;
    if !out.status.success() {
        eprintln!("    cargo bloat unavailable ({}); sizes without a breakdown", out.status);
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}
