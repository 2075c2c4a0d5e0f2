//! One target's cases in one process (`edgediff-fuzz worker`, started by the supervisor under
//! an address-space limit): a watchdog for hangs, the current case on disk, and JSON lines on
//! stdout (progress, findings, the final counts) for the supervisor to read.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::engine::{install_quiet_hook, run_case, Engine, Outcome, PanicReport, PANICKED};
use crate::findings::{save, CurrentCase, Finding, Kind};
use crate::{corpus, Context, FuzzError, Target};

/// The exit code of a worker whose watchdog ended a case that ran too long.
pub const TIMEOUT_EXIT: i32 = 86;
/// Inputs saved per target, kind and panic location: the first few tell the story (one for a
/// guarded panic).
const SAVED_PER_PLACE: usize = 3;
/// Often enough that a worker that dies loses little of its stage counts.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How long and how a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub seed: u64,
    pub seconds: Option<f64>,
    pub runs: Option<u64>,
    pub findings: PathBuf,
    pub case_timeout: Duration,
}

/// Where a worker writes its current case.
pub fn current_case_path(findings: &Path, target: &str) -> PathBuf {
    findings.join(format!(".current-{target}"))
}

/// Runs cases until the time or run budget is spent; returns the number of executions.
pub fn run(target: &'static Target, cfg: &WorkerConfig, out: &mut impl Write) -> Result<u64, FuzzError> {
    let ctx = Context::new()?;
    target.check(&ctx)?;
    let mut engine = Engine::new(target, corpus::load(target.name)?, cfg.seed);
    std::fs::create_dir_all(&cfg.findings).map_err(|e| FuzzError::file(&cfg.findings, e))?;
    let current = CurrentCase::create(&current_case_path(&cfg.findings, target.name))?;
    let start = Instant::now();
    let case_started = start_watchdog(cfg.case_timeout, start);
    install_quiet_hook();
    let deadline = cfg.seconds.map(|s| start + Duration::from_secs_f64(s));
    let (mut runs, mut last_progress) = (0u64, start);
    let mut saved: HashMap<String, usize> = HashMap::new();
    let self_test = self_test_case();
    while cfg.runs.is_none_or(|n| runs < n) && deadline.is_none_or(|d| Instant::now() < d) {
        let case = engine.next_case();
        current.write(runs, &case)?;
        case_started.store(start.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        if let Some((what, at)) = &self_test {
            if *at == runs {
                misbehave(what);
            }
        }
        let outcome = run_case(target, &ctx, &case);
        case_started.store(0, Ordering::Relaxed);
        runs += 1;
        let (stage, report) = match outcome {
            Outcome::Returned { stage, guarded } => (stage, guarded.map(|g| (Kind::Guarded, g))),
            Outcome::Panicked(report) => (PANICKED, Some((Kind::Panic, report))),
        };
        if let Some((kind, report)) = report {
            let count = saved.entry(dedup_key(kind, &report)).or_default();
            *count += 1;
            if *count <= if kind.is_fatal() { SAVED_PER_PLACE } else { 1 } {
                let finding = record(target, &ctx, &cfg.findings, kind, &case, &report)?;
                emit(out, json!({"finding": finding.to_json()}));
            }
        }
        engine.record(case, stage);
        if last_progress.elapsed() >= PROGRESS_EVERY {
            last_progress = Instant::now();
            emit(out, json!({"progress": {"executions": runs, "stages": engine.stages}}));
        }
    }
    emit(out, json!({"done": {"executions": runs, "stages": engine.stages}}));
    Ok(runs)
}

/// Test hook: `EDGEDIFF_FUZZ_SELF_TEST=abort@N` (or `hang@N`) makes the worker's case N abort
/// the process (or hang), so the tests can check that a run records both and carries on.
pub const SELF_TEST_ENV: &str = "EDGEDIFF_FUZZ_SELF_TEST";

fn self_test_case() -> Option<(String, u64)> {
    let value = std::env::var(SELF_TEST_ENV).ok()?;
    let (what, at) = value.split_once('@')?;
    Some((what.to_string(), at.parse().ok()?))
}

fn misbehave(what: &str) {
    match what {
        "abort" => std::process::abort(),
        "hang" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        _ => {}
    }
}

/// Findings with the same kind, place and message head are one bug, as far as saving goes:
/// the message head (before its first `:`) tells apart the different checks of one `assert!`.
fn dedup_key(kind: Kind, report: &PanicReport) -> String {
    let head: String = report.message.split(':').next().unwrap_or("").chars().take(80).collect();
    format!("{}@{}: {head}", kind.name(), report.location)
}

fn emit(out: &mut impl Write, line: serde_json::Value) {
    // A supervisor that stopped reading is gone; the worker's results are on disk anyway.
    let _ = writeln!(out, "{line}").and_then(|_| out.flush());
}

/// Saves a panic's input with its message, location and a backtrace from running it again.
fn record(
    target: &Target,
    ctx: &Context,
    dir: &Path,
    kind: Kind,
    case: &[u8],
    report: &PanicReport,
) -> Result<Finding, FuzzError> {
    let message = format!("{} at {}", report.message, report.location);
    let details = replay_with_backtrace(target, ctx, case);
    save(dir, target.name, kind, case, &message, &details)
}

/// Runs `case` once more with a hook that captures the backtrace, then puts the quiet hook back.
fn replay_with_backtrace(target: &Target, ctx: &Context, case: &[u8]) -> String {
    let trace = Arc::new(std::sync::Mutex::new(String::new()));
    let sink = Arc::clone(&trace);
    std::panic::set_hook(Box::new(move |info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        if let Ok(mut t) = sink.lock() {
            t.push_str(&format!("panicked: {info}\n{backtrace}\n"));
        }
    }));
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (target.run)(ctx, case)));
    install_quiet_hook();
    let trace = trace.lock().map(|t| trim_backtrace(&t)).unwrap_or_default();
    if trace.is_empty() {
        "replayed: did not panic again (the panic depends on state from earlier cases)".into()
    } else {
        format!("replayed with a backtrace:\n{trace}")
    }
}

/// The backtrace from the frame that panicked on, at most 80 lines: the panic machinery's own
/// frames come first and say nothing about the bug.
fn trim_backtrace(trace: &str) -> String {
    let lines: Vec<&str> = trace.lines().collect();
    let machinery = lines.iter().rposition(|l| l.contains("core::panicking::") || l.contains("rust_begin_unwind"));
    let first = lines.first().copied().unwrap_or("");
    let start = machinery.map_or(1, |i| i + 2).min(lines.len());
    let body = lines[start..].iter().take(80).copied().collect::<Vec<_>>().join("\n");
    format!("{first}\n{}\n{body}", lines.get(1).copied().unwrap_or(""))
}

/// A thread that ends the process when one case runs longer than `timeout`. Returns the cell
/// the worker sets to the case's start (milliseconds since `origin`, plus one) and clears
/// after it.
fn start_watchdog(timeout: Duration, origin: Instant) -> Arc<AtomicU64> {
    let started = Arc::new(AtomicU64::new(0));
    let cell = Arc::clone(&started);
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let at = cell.load(Ordering::Relaxed);
        let now = origin.elapsed().as_millis() as u64 + 1;
        if at != 0 && now.saturating_sub(at) > timeout.as_millis() as u64 {
            eprintln!("edgediff-fuzz: a case ran longer than {} s", timeout.as_secs_f64());
            std::process::exit(TIMEOUT_EXIT);
        }
    });
    started
}
