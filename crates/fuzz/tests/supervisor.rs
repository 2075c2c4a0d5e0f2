//! `edgediff-fuzz run` end to end: counts what it ran, and a worker that aborts or hangs is a
//! finding (input saved, exit 1) after which the run goes on for the cases left.

use std::process::{Command, Output};

use edgediff_fuzz::worker::SELF_TEST_ENV;

fn run(args: &[&str], findings: &std::path::Path, self_test: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_edgediff-fuzz"));
    cmd.arg("run").args(args).arg("--findings").arg(findings);
    match self_test {
        Some(v) => cmd.env(SELF_TEST_ENV, v),
        None => cmd.env_remove(SELF_TEST_ENV),
    };
    cmd.output().expect("run edgediff-fuzz")
}

/// The executions column of `target`'s row in the summary.
fn executions(stdout: &str, target: &str) -> u64 {
    let row =
        stdout.lines().find(|l| l.starts_with(&format!("{target} "))).unwrap_or_else(|| panic!("no row: {stdout}"));
    row.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no count: {row}"))
}

fn files(dir: &std::path::Path, prefix: &str) -> usize {
    std::fs::read_dir(dir).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count()
}

#[test]
fn a_bounded_run_counts_its_cases() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--target", "npy,scheduler_config", "--runs", "40", "--seed", "3"], dir.path(), None);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(executions(&stdout, "npy"), 40);
    assert_eq!(executions(&stdout, "scheduler_config"), 40);
}

#[test]
fn an_abort_is_a_finding_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--target", "scheduler_config", "--runs", "20"], dir.path(), Some("abort@5"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(executions(&stdout, "scheduler_config"), 20, "{stdout}");
    assert!(stdout.contains("scheduler_config abort: worker ended: signal: 6"), "{stdout}");
    assert!(files(dir.path(), "scheduler_config-") >= 2, "input and report saved");
}

#[test]
fn a_hang_is_a_finding() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["--target", "meta", "--runs", "4", "--case-timeout", "0.5"], dir.path(), Some("hang@2"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("meta timeout:"), "{stdout}");
    assert_eq!(executions(&stdout, "meta"), 4, "{stdout}");
}
