//! `edgediff-fuzz run`: each target in its own worker process (this executable, `worker`),
//! started through `sh` with `ulimit -v` so an allocation beyond the limit aborts the worker
//! instead of exhausting the machine. A worker that dies (abort, signal) or hangs leaves its
//! current case on disk: the supervisor saves it as a finding and starts a fresh worker, with
//! the next seed, for the time or runs left.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::findings::{save, CurrentCase, Finding, Kind};
use crate::worker::{current_case_path, TIMEOUT_EXIT};
use crate::{FuzzError, Target};

/// A target is given up when this many workers in a row die within their first [`EARLY`]
/// cases: it cannot run here. Workers dying later are restarted for as long as the run lasts.
const MAX_EARLY_DEATHS: u32 = 20;
const EARLY: u64 = 10;
/// Aborts and hangs saved per target and message (digits aside): the same abort found again
/// is only counted, in the restarts.
const SAVED_PER_SIGNATURE: usize = 3;
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct RunConfig {
    pub targets: Vec<&'static Target>,
    /// Per target.
    pub seconds: Option<f64>,
    /// Per target.
    pub runs: Option<u64>,
    pub seed: u64,
    pub findings: PathBuf,
    pub memory_limit_mib: u64,
    pub case_timeout: Duration,
}

/// What one target's run did.
#[derive(Debug, Clone, Default)]
pub struct TargetReport {
    pub target: String,
    pub executions: u64,
    pub seconds: f64,
    /// Workers that died and were replaced.
    pub restarts: u64,
    pub stages: BTreeMap<String, u64>,
}

#[derive(Debug, Default)]
pub struct Summary {
    pub reports: Vec<TargetReport>,
    pub findings: Vec<Finding>,
}

impl Summary {
    /// Whether any finding fails the run: a guarded panic does not, nor an open bug that
    /// [`crate::known`] lists.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.kind.is_fatal() && crate::known::lookup(f).is_none())
    }
}

/// Runs every target of `cfg` in turn.
pub fn run(cfg: &RunConfig) -> Result<Summary, FuzzError> {
    let mut summary = Summary::default();
    for &target in &cfg.targets {
        let report = run_target(target, cfg, &mut summary.findings)?;
        eprintln!(
            "edgediff-fuzz: {}: {} executions in {:.0} s ({:.0}/s), {} restarts",
            report.target,
            report.executions,
            report.seconds,
            report.executions as f64 / report.seconds.max(1e-3),
            report.restarts
        );
        summary.reports.push(report);
    }
    Ok(summary)
}

fn run_target(
    target: &'static Target,
    cfg: &RunConfig,
    findings: &mut Vec<Finding>,
) -> Result<TargetReport, FuzzError> {
    let start = Instant::now();
    let mut report = TargetReport { target: target.name.to_string(), ..TargetReport::default() };
    let (mut early_deaths, mut seen) = (0, HashMap::<String, usize>::new());
    for attempt in 0u64.. {
        let seconds = cfg.seconds.map(|s| s - start.elapsed().as_secs_f64());
        let runs = cfg.runs.map(|n| n.saturating_sub(report.executions));
        if seconds.is_some_and(|s| s <= 0.0) || runs == Some(0) {
            break;
        }
        if early_deaths >= MAX_EARLY_DEATHS {
            eprintln!("edgediff-fuzz: {}: {MAX_EARLY_DEATHS} workers in a row died at once; giving up", target.name);
            break;
        }
        let seed = cfg.seed.wrapping_add(attempt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let worker = Worker { target, cfg, seed, seconds, runs };
        let (status, stderr) = worker.run(&mut report, findings)?;
        if status.success() {
            break;
        }
        let kind = match status.code() {
            Some(TIMEOUT_EXIT) => Kind::Timeout,
            Some(code) if status.signal().is_none() => {
                return Err(FuzzError::Worker { target: target.name.into(), message: format!("exit {code}: {stderr}") })
            }
            _ => Kind::Abort,
        };
        let (index, input) = CurrentCase::read(&current_case_path(&cfg.findings, target.name))?;
        report.executions += index + 1;
        report.restarts += 1;
        early_deaths = if index < EARLY { early_deaths + 1 } else { 0 };
        let message = format!("worker ended: {status}; stderr: {}", stderr.trim());
        let signature: String = format!("{}: {message}", kind.name()).chars().filter(|c| !c.is_ascii_digit()).collect();
        let count = seen.entry(signature).or_default();
        *count += 1;
        if *count <= SAVED_PER_SIGNATURE {
            let finding = save(&cfg.findings, target.name, kind, &input, &message, "")?;
            eprintln!("edgediff-fuzz: finding: {finding}");
            findings.push(finding);
        }
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// One worker process and what it is asked to do.
struct Worker<'a> {
    target: &'static Target,
    cfg: &'a RunConfig,
    seed: u64,
    seconds: Option<f64>,
    runs: Option<u64>,
}

impl Worker<'_> {
    /// Starts the worker, follows its JSON lines into `report` and `findings`, and returns how
    /// it ended with the end of its stderr. Executions of a worker that dies are counted by the
    /// caller, from the case it died on.
    fn run(&self, report: &mut TargetReport, findings: &mut Vec<Finding>) -> Result<(ExitStatus, String), FuzzError> {
        let mut child = self.command()?.spawn().map_err(|e| self.error(format!("cannot start: {e}")))?;
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = err.read_to_string(&mut text);
                let cut = text.len().saturating_sub(4000);
                text[(cut..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(0)..].to_string()
            })
        });
        let stdout = child.stdout.take().ok_or_else(|| self.error("no stdout".into()))?;
        let (mut last_print, mut progress, mut done) = (Instant::now(), None, false);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else { continue };
            if let Some(f) = value.get("finding").and_then(Finding::from_json) {
                eprintln!("edgediff-fuzz: finding: {f}");
                findings.push(f);
            } else if let Some(counts) = value.get("done") {
                merge_counts(report, counts, true);
                done = true;
            } else if let Some(p) = value.get("progress") {
                if last_print.elapsed() >= PROGRESS_EVERY {
                    last_print = Instant::now();
                    let runs = p.get("executions").and_then(|e| e.as_u64()).unwrap_or(0);
                    eprintln!("edgediff-fuzz: {}: {runs} executions so far in this worker", self.target.name);
                }
                progress = Some(p.clone());
            }
        }
        if let (false, Some(p)) = (done, progress) {
            merge_counts(report, &p, false);
        }
        let status = child.wait().map_err(|e| self.error(format!("cannot wait: {e}")))?;
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        Ok((status, stderr))
    }

    /// `sh -c 'ulimit -v KIB && ulimit -c 0 && exec EXE worker ...'`: the limit applies to the
    /// worker and the processes it starts (the CLI target's sampler runs).
    fn command(&self) -> Result<Command, FuzzError> {
        let exe = std::env::current_exe().map_err(|e| self.error(format!("cannot find this executable: {e}")))?;
        let cfg = self.cfg;
        let mut cmd = Command::new("sh");
        cmd.args(["-c", r#"ulimit -v "$1" && ulimit -c 0 && shift && exec "$@""#, "sh"])
            .arg((cfg.memory_limit_mib << 10).to_string())
            .arg(exe)
            .args(["worker", "--target", self.target.name, "--seed", &self.seed.to_string()])
            .arg("--findings")
            .arg(&cfg.findings)
            .args(["--case-timeout", &cfg.case_timeout.as_secs_f64().to_string()]);
        if let Some(s) = self.seconds {
            cmd.args(["--seconds", &format!("{s:.3}")]);
        }
        if let Some(n) = self.runs {
            cmd.args(["--runs", &n.to_string()]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Ok(cmd)
    }

    fn error(&self, message: String) -> FuzzError {
        FuzzError::Worker { target: self.target.name.into(), message }
    }
}

/// Adds a worker's counts (`{"executions": n, "stages": {...}}`) to the report; the stages
/// only, for the last progress of a worker that died.
fn merge_counts(report: &mut TargetReport, counts: &serde_json::Value, executions: bool) {
    if executions {
        report.executions += counts.get("executions").and_then(|e| e.as_u64()).unwrap_or(0);
    }
    if let Some(stages) = counts.get("stages").and_then(|s| s.as_object()) {
        for (stage, n) in stages {
            *report.stages.entry(stage.clone()).or_default() += n.as_u64().unwrap_or(0);
        }
    }
}
