//! One emulated sampler run: `qemu-aarch64 -cpu <profile cpu>` with the counting plugin, the
//! profile's tract kernel kind, threads and memory budget; then its outputs read back.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::SimError;
use crate::profile::Profile;
use crate::reference::{read_npy, Array, Reference};
use crate::toolchain::Toolchain;

/// Which model the sampler runs.
#[derive(Debug, Clone)]
pub enum ModelChoice {
    /// The model embedded in `sampler` (models/sprites-cond.onnx at build time).
    Embedded,
    File(PathBuf),
}

/// The sampling settings shared by the emulated run and any host re-reference.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub steps: u32,
    pub scheduler: String,
    pub spacing: String,
    pub eta: f64,
    pub steps_offset: Option<u64>,
    pub set_alpha_to_one: Option<bool>,
    /// Conditional references: the class and guidance scale to sample with.
    pub class: Option<String>,
    pub guidance: Option<f64>,
    /// Metadata overrides (`sampler --meta KEY=VALUE`).
    pub meta: Vec<String>,
    /// Images per run (`--batch`; 1 when `None`): image k is seed `seed + k`.
    pub batch: Option<u32>,
}

impl Settings {
    pub fn from_reference(r: &Reference, seed: u64, steps: u32) -> Settings {
        Settings {
            seed,
            steps,
            scheduler: r.scheduler.clone(),
            spacing: r.spacing.clone(),
            eta: r.eta,
            steps_offset: r.steps_offset,
            set_alpha_to_one: r.set_alpha_to_one,
            class: r.class.clone(),
            guidance: r.guidance,
            meta: Vec::new(),
            batch: None,
        }
    }

    fn args(&self, model: &ModelChoice) -> Vec<String> {
        let mut a = vec![
            "--seed".into(),
            self.seed.to_string(),
            "--steps".into(),
            self.steps.to_string(),
            "--scheduler".into(),
            self.scheduler.clone(),
            "--spacing".into(),
            self.spacing.clone(),
            "--eta".into(),
            self.eta.to_string(),
        ];
        if let Some(o) = self.steps_offset {
            a.extend(["--steps-offset".into(), o.to_string()]);
        }
        if let Some(b) = self.set_alpha_to_one {
            a.extend(["--set-alpha-to-one".into(), b.to_string()]);
        }
        if let Some(c) = &self.class {
            a.extend(["--class".into(), c.clone()]);
        }
        if let Some(w) = self.guidance {
            a.extend(["--guidance".into(), w.to_string()]);
        }
        if let ModelChoice::File(p) = model {
            a.extend(["--model".into(), p.display().to_string()]);
        }
        for m in &self.meta {
            a.extend(["--meta".into(), m.clone()]);
        }
        if let Some(n) = self.batch {
            a.extend(["--batch".into(), n.to_string()]);
        }
        a
    }
}

/// What `sampler --report-json` says about a run (the fields the gates use).
#[derive(Debug, Clone)]
pub struct SamplerReport {
    pub model_sha256: String,
    pub precision: String,
    /// `edgediff.float_order` as the sampler applied it: `fixed` (the same bytes on every CPU)
    /// or `tract`.
    pub float_order: String,
    pub value_range: (f64, f64),
    pub peak_heap_bytes: u64,
    pub evaluations: u64,
}

impl SamplerReport {
    pub fn parse(path: &Path) -> Result<SamplerReport, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::file(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| SimError::file(path, e))?;
        let bad = |key: &str| SimError::file(path, format!("sampler report has no valid `{key}`"));
        let range = v.get("value_range").and_then(Value::as_array).ok_or_else(|| bad("value_range"))?;
        let lo = range.first().and_then(Value::as_f64).ok_or_else(|| bad("value_range"))?;
        let hi = range.get(1).and_then(Value::as_f64).ok_or_else(|| bad("value_range"))?;
        Ok(SamplerReport {
            model_sha256: v.get("model_sha256").and_then(Value::as_str).ok_or_else(|| bad("model_sha256"))?.to_string(),
            precision: v.get("precision").and_then(Value::as_str).ok_or_else(|| bad("precision"))?.to_string(),
            float_order: v.get("float_order").and_then(Value::as_str).ok_or_else(|| bad("float_order"))?.to_string(),
            value_range: (lo, hi),
            peak_heap_bytes: v.get("peak_heap_bytes").and_then(Value::as_u64).ok_or_else(|| bad("peak_heap_bytes"))?,
            evaluations: v.get("evaluations").and_then(Value::as_u64).ok_or_else(|| bad("evaluations"))?,
        })
    }
}

/// Guest instruction counts from the plugin (see plugin/insn_count.c).
#[derive(Debug, Clone, PartialEq)]
pub struct Counts {
    pub total: u64,
    /// First begin marker to last end marker: the sampling loop.
    pub sampling_loop: u64,
    pub evals: Vec<u64>,
    pub unmatched_markers: u64,
}

impl Counts {
    pub fn parse(path: &Path) -> Result<Counts, SimError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| SimError::file(path, format!("no instruction counts ({e})")))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| SimError::file(path, e))?;
        let num = |k: &str| v.get(k).and_then(Value::as_u64).ok_or_else(|| SimError::file(path, format!("no `{k}`")));
        let evals = v
            .get("evals")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| SimError::file(path, "no `evals` list"))?;
        Ok(Counts {
            total: num("total")?,
            sampling_loop: num("loop")?,
            evals,
            unmatched_markers: num("unmatched_markers")?,
        })
    }

    pub fn mean_per_eval(&self) -> Option<f64> {
        (!self.evals.is_empty()).then(|| self.evals.iter().sum::<u64>() as f64 / self.evals.len() as f64)
    }

    /// Median instructions per evaluation: the first evaluation also pays one-time set-up
    /// (scratch buffers), so the median is the steady cost and repeats best between runs.
    pub fn median_per_eval(&self) -> Option<f64> {
        let mut v = self.evals.clone();
        v.sort_unstable();
        let n = v.len();
        match n {
            0 => None,
            _ if n % 2 == 1 => Some(v[n / 2] as f64),
            _ => Some((v[n / 2 - 1] as f64 + v[n / 2] as f64) / 2.0),
        }
    }

    /// (max - min) / mean over the evaluations of one run.
    pub fn eval_spread(&self) -> Option<f64> {
        let mean = self.mean_per_eval()?;
        let (min, max) = (self.evals.iter().min()?, self.evals.iter().max()?);
        Some((max - min) as f64 / mean)
    }
}

/// A finished emulated run; `failure` is set when the sampler itself exited with an error
/// (e.g. over its memory budget), and then the vectors and report are absent.
#[derive(Debug)]
pub struct EmulatedRun {
    pub wall: Duration,
    pub failure: Option<String>,
    pub x_t: Option<Array>,
    pub x0: Option<Array>,
    pub report: Option<SamplerReport>,
    pub counts: Option<Counts>,
}

impl EmulatedRun {
    /// A run whose sampler exited with an error: no outputs to read.
    fn failed(wall: Duration, failure: String) -> EmulatedRun {
        EmulatedRun { wall, failure: Some(failure), x_t: None, x0: None, report: None, counts: None }
    }

    /// Reads back what a successful run wrote into `dir`.
    fn read(dir: &Path, counts_path: &Path, wall: Duration) -> Result<EmulatedRun, SimError> {
        Ok(EmulatedRun {
            wall,
            failure: None,
            x_t: Some(read_npy(&dir.join("x_T.npy"))?),
            x0: Some(read_npy(&dir.join("x0.npy"))?),
            report: Some(SamplerReport::parse(&dir.join("sampler.json"))?),
            counts: Some(Counts::parse(counts_path)?),
        })
    }
}

/// Runs the aarch64 sampler under qemu for `profile`; outputs go to `dir`.
pub fn run_emulated(
    tools: &Toolchain,
    sampler: &Path,
    plugin: &Path,
    profile: &Profile,
    model: &ModelChoice,
    settings: &Settings,
    dir: &Path,
) -> Result<EmulatedRun, SimError> {
    let counts_path = dir.join("counts.json");
    let plugin_arg = prepare_run_dir(dir, plugin, &counts_path)?;
    let mut cmd = guest_command(tools, sampler, &plugin_arg, profile, model, settings);
    cmd.current_dir(dir);
    let started = Instant::now();
    let out = cmd.output().map_err(|e| SimError::Command { what: "qemu-aarch64".into(), message: e.to_string() })?;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    edgediff_io::write_atomic(&dir.join("stderr.txt"), stderr.as_bytes())?;
    if !out.status.success() {
        return Ok(EmulatedRun::failed(wall, format!("sampler exited with {}: {}", out.status, last_line(&stderr))));
    }
    EmulatedRun::read(dir, &counts_path, wall)
}

/// Creates `dir` and clears a previous run's outputs from it; returns qemu's `-plugin`
/// argument, which writes the counts to `counts_path`.
fn prepare_run_dir(dir: &Path, plugin: &Path, counts_path: &Path) -> Result<String, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::file(dir, e))?;
    let plugin_arg = format!("{},out={}", plugin.display(), counts_path.display());
    if plugin_arg.matches(',').count() != 1 {
        return Err(SimError::Invalid(format!("paths for qemu -plugin must not contain commas: {plugin_arg}")));
    }
    for stale in ["counts.json", "x_T.npy", "x0.npy", "sampler.json", "sample.png"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok(plugin_arg)
}

/// `qemu-aarch64 ... sampler ...` with the profile's CPU, kernels, threads and budget. Output
/// names are relative: the caller sets the run directory.
fn guest_command(
    tools: &Toolchain,
    sampler: &Path,
    plugin_arg: &str,
    profile: &Profile,
    model: &ModelChoice,
    settings: &Settings,
) -> Command {
    let mut cmd = Command::new(&tools.qemu);
    // The guest sees exactly this argv and environment, whatever the caller's (no stray RUST_*,
    // TRACT_* or other variables; output names relative to the run directory). Counts still
    // differ by ~1e-4 between runs, from inside the process (not from address randomisation:
    // `setarch -R` did not narrow it; randomly seeded hash maps are the likely source).
    cmd.arg("-L").arg(&tools.sysroot).args(["-cpu", &profile.qemu_cpu, "-plugin", plugin_arg]).arg(sampler);
    cmd.arg("sample.png")
        .args(settings.args(model))
        .args([
            "--threads",
            &profile.threads.to_string(),
            "--memory-budget",
            &format!("{}MiB", profile.memory_budget_mib),
        ])
        .args(["--save-init-noise", "x_T.npy", "--save-raw", "x0.npy", "--report-json", "sampler.json", "--quiet"])
        .env_clear()
        .env("LANG", "C")
        .env("TRACT_CPU_AARCH64_KIND", &profile.tract_kind)
        .env("EDGEDIFF_SIM_MARKERS", "1");
    cmd
}

/// The last non-empty line of a program's stderr: its error message.
fn last_line(stderr: &str) -> &str {
    stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(no message)")
}

/// A finished host (x86_64) sampler run.
#[derive(Debug)]
pub struct HostRun {
    pub x0: Array,
    pub report: SamplerReport,
}

/// Runs the host (x86_64) sampler with the same settings as the emulated run. With
/// `init_noise` it starts from that x_T (a re-reference of the reference's x0 at a step count
/// the reference does not have); without, from the seed, exactly as the emulated run does (the
/// cross-CPU comparison of one model).
pub fn run_host(
    host_sampler: &Path,
    model: &ModelChoice,
    settings: &Settings,
    init_noise: Option<&Path>,
    dir: &Path,
) -> Result<HostRun, SimError> {
    std::fs::create_dir_all(dir).map_err(|e| SimError::file(dir, e))?;
    for stale in ["host-sample.png", "host-x0.npy", "host-sampler.json"] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    let mut cmd = Command::new(host_sampler);
    cmd.arg(dir.join("host-sample.png")).args(settings.args(model));
    if let Some(x_t) = init_noise {
        cmd.arg("--init-noise").arg(x_t);
    }
    let out = cmd
        .arg("--save-raw")
        .arg(dir.join("host-x0.npy"))
        .arg("--report-json")
        .arg(dir.join("host-sampler.json"))
        .arg("--quiet")
        .output()
        .map_err(|e| SimError::Command { what: "host sampler".into(), message: e.to_string() })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        return Err(SimError::Command { what: "host sampler".into(), message: last_line(&text).to_string() });
    }
    Ok(HostRun {
        x0: read_npy(&dir.join("host-x0.npy"))?,
        report: SamplerReport::parse(&dir.join("host-sampler.json"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_flags_follow_the_reference() {
        let mut s = Settings {
            seed: 3,
            steps: 20,
            scheduler: "dpmpp2m".into(),
            spacing: "linspace".into(),
            eta: 0.0,
            steps_offset: Some(1),
            set_alpha_to_one: None,
            class: None,
            guidance: None,
            meta: Vec::new(),
            batch: None,
        };
        let plain = s.args(&ModelChoice::Embedded);
        assert_eq!(
            plain.join(" "),
            "--seed 3 --steps 20 --scheduler dpmpp2m --spacing linspace --eta 0 --steps-offset 1"
        );
        s.class = Some("star".into());
        s.guidance = Some(3.0);
        let guided = s.args(&ModelChoice::File("m.onnx".into()));
        assert!(guided.join(" ").ends_with("--class star --guidance 3 --model m.onnx"), "{guided:?}");
        s.meta = vec!["float_order=fixed".into()];
        let fixed = s.args(&ModelChoice::File("m.onnx".into()));
        assert!(fixed.join(" ").ends_with("--model m.onnx --meta float_order=fixed"), "{fixed:?}");
        s.batch = Some(3);
        assert!(s.args(&ModelChoice::Embedded).join(" ").ends_with("--meta float_order=fixed --batch 3"));
    }

    #[test]
    fn parses_plugin_counts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"total": 125409, "loop": 36248, "unmatched_markers": 0, "evals": [6050, 12050, 18050]}"#,
        )
        .unwrap();
        let c = Counts::parse(&p).unwrap();
        assert_eq!((c.total, c.sampling_loop, c.unmatched_markers), (125409, 36248, 0));
        assert_eq!(c.mean_per_eval(), Some(12050.0));
        assert_eq!(c.median_per_eval(), Some(12050.0));
        let even = Counts { evals: vec![5, 1, 3, 100], ..c.clone() };
        assert_eq!(even.median_per_eval(), Some(4.0));
        assert!((c.eval_spread().unwrap() - 12000.0 / 12050.0).abs() < 1e-12);
        std::fs::write(&p, r#"{"total": 1, "loop": 1}"#).unwrap();
        assert!(Counts::parse(&p).unwrap_err().to_string().contains("evals"));
    }
}
