//! Running `examples/bench_probe.rs eval` (one engine configuration per process) natively, with
//! the malloc-peak shim (`xtask/heap_peak.c`) preloaded, or under valgrind's massif and callgrind.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// One `bench_probe eval` invocation, runnable natively or under a valgrind tool.
pub struct ProbeEval {
    argv: Vec<String>,
    lib: PathBuf,
}

impl ProbeEval {
    pub fn command(&self) -> Command {
        self.under(&[])
    }
    fn under(&self, prefix: &[String]) -> Command {
        let all: Vec<&String> = prefix.iter().chain(&self.argv).collect();
        let mut cmd = Command::new(all[0]);
        cmd.args(&all[1..]).env("ORT_DYLIB_PATH", &self.lib);
        cmd
    }
}

pub fn probe_eval(probe: &Path, lib: &Path, engine: &str, model: &str, threads: usize) -> ProbeEval {
    let argv = [
        probe.to_string_lossy().as_ref(),
        "eval",
        "--engine",
        engine,
        "--model",
        model,
        "--threads",
        &threads.to_string(),
    ]
    .map(String::from)
    .to_vec();
    ProbeEval { argv, lib: lib.to_path_buf() }
}

pub fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("edgediff-bench-{}-{name}", std::process::id()))
}

/// Compiles xtask/heap_peak.c into target/bench-report/heap_peak.so.
pub fn build_heap_shim(root: &Path) -> Result<PathBuf> {
    let out_dir = root.join("target/bench-report");
    std::fs::create_dir_all(&out_dir)?;
    let so = out_dir.join("heap_peak.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(root.join("xtask/heap_peak.c"))
        .status()
        .with_context(|| format!("cannot run the C compiler `{cc}`"))?;
    if !status.success() {
        bail!("`{cc}` failed to build xtask/heap_peak.c ({status})");
    }
    Ok(so)
}

/// Runs the probe with the malloc shim preloaded; returns its JSON and the malloc peak.
pub fn with_heap_shim(eval: &ProbeEval, so: &Path) -> Result<(Value, u64)> {
    let file = scratch("heap-peak.txt");
    std::fs::remove_file(&file).ok();
    let mut cmd = eval.command();
    cmd.env("LD_PRELOAD", so).env("EDGEDIFF_HEAP_PEAK_FILE", &file);
    let v = json_of(&mut cmd)?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("the heap shim wrote no {}", file.display()))?;
    std::fs::remove_file(&file).ok();
    Ok((v, text.trim().parse().with_context(|| format!("the heap shim wrote {text:?}"))?))
}

/// Peak malloc heap (massif's largest `mem_heap_B` snapshot), whole process.
pub fn massif_peak(eval: &ProbeEval) -> Result<u64> {
    let file = scratch("massif.out");
    let prefix = ["valgrind", "--tool=massif", "--quiet"].map(String::from).to_vec();
    let mut cmd = eval.under(&[prefix, vec![format!("--massif-out-file={}", file.display())]].concat());
    json_of(&mut cmd)?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("massif wrote no {}", file.display()))?;
    std::fs::remove_file(&file).ok();
    text.lines()
        .filter_map(|l| l.strip_prefix("mem_heap_B=")?.trim().parse::<u64>().ok())
        .max()
        .context("massif output has no snapshots")
}

/// Instructions collected inside `measured_eval` only.
pub fn callgrind_count(eval: &ProbeEval) -> Result<u64> {
    let file = scratch("callgrind.out");
    let prefix =
        ["valgrind", "--tool=callgrind", "--quiet", "--toggle-collect=*measured_eval*"].map(String::from).to_vec();
    let mut cmd = eval.under(&[prefix, vec![format!("--callgrind-out-file={}", file.display())]].concat());
    json_of(&mut cmd)?;
    let text = std::fs::read_to_string(&file).with_context(|| format!("callgrind wrote no {}", file.display()))?;
    std::fs::remove_file(&file).ok();
    let total = text.lines().find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")));
    let count: u64 =
        total.and_then(|t| t.split_whitespace().next()?.parse().ok()).context("callgrind output has no totals")?;
    if count == 0 {
        bail!("callgrind collected nothing: `measured_eval` was not found in the probe binary");
    }
    Ok(count)
}

/// Runs a command, fails on a bad exit, parses its stdout as JSON.
pub fn json_of(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{:?} printed no JSON", cmd.get_program()))
}
