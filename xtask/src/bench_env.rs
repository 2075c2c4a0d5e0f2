//! Facts about the machine and the run that the benchmark report prints beside its numbers:
//! date, load average, CPU and memory, and the versions of everything measured.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

/// `program args`' trimmed standard output, or `unknown` when it cannot run or fails.
fn capture(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The current time in UTC, to the minute.
pub fn utc_now() -> Result<String> {
    let s = capture("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    if s == "unknown" {
        bail!("cannot read the date");
    }
    Ok(s)
}

/// The 1, 5 and 15-minute load averages, or `unknown` where `/proc/loadavg` is missing.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// `valgrind --version`, or `unknown`.
pub fn valgrind_version() -> String {
    capture("valgrind", &["--version"])
}

/// The report's Machine table: CPU, cores available, SIMD flags, memory and OS.
pub fn machine() -> Vec<(String, String)> {
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

/// The report's Versions table: the engines as `Cargo.lock` pins them, rustc, criterion and
/// valgrind; `ort` is the ONNX Runtime version the probe reported.
pub fn versions(root: &Path, ort: Option<&str>) -> Vec<(String, String)> {
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
