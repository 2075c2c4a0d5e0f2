//! The `sampler` binary's command line: the input's lines are its arguments, run in a fresh
//! scratch folder holding a small model, `.npy` files, configuration files, a folder and a
//! symlink. What every run must do is checked in [`super::cli_check`]: exit 0, 1 or 2 (never a
//! signal), one line on stderr when it fails, no panic, no file left that no argument names.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::cli_check;
use super::Stage;
use crate::{gen_corpus, Context};

pub const USAGE_ERROR: Stage = "exit 2 (bad input)";
pub const FAILED: Stage = "exit 1";
pub const SUCCEEDED: Stage = "exit 0";
pub const TIMED_OUT: Stage = "killed after the time limit";

/// A run longer than this is killed and counted, not reported: sampling is legitimately slow
/// for large `--steps` or `--batch`, which the generator keeps rare.
pub const TIME_LIMIT: Duration = Duration::from_secs(10);
/// At most this many arguments, each cut to [`MAX_WORD`] bytes.
const MAX_WORDS: usize = 64;
const MAX_WORD: usize = 1024;
/// Absolute paths a run may name; every other one is made relative to the scratch folder, so
/// no mutated argument can write outside it.
const ALLOWED_ABSOLUTE: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

pub fn run(ctx: &Context, bytes: &[u8]) -> Stage {
    let sampler = ctx.sampler().expect("the sampler binary (checked before the run)");
    let words = words(bytes);
    let dir = tempfile::tempdir_in(ctx.scratch()).expect("create a scratch folder for the run");
    write_fixtures(dir.path());
    let (stdout, stderr) = (ctx.scratch().join("cli-stdout"), ctx.scratch().join("cli-stderr"));
    let file = |p: &Path| std::fs::File::create(p).expect("create a file for the sampler's output");
    let mut child = Command::new(sampler)
        .args(&words)
        .current_dir(dir.path())
        .env_remove("RUST_BACKTRACE")
        .env("TMPDIR", dir.path())
        .stdin(Stdio::null())
        .stdout(file(&stdout))
        .stderr(file(&stderr))
        .spawn()
        .expect("start the sampler");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the sampler") {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return TIMED_OUT;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = std::fs::read(&stderr).unwrap_or_default();
    let code = cli_check::check_exit(status, &String::from_utf8_lossy(&stderr));
    cli_check::check_leftovers(dir.path(), FIXTURES, &words);
    match code {
        0 => SUCCEEDED,
        1 => FAILED,
        _ => USAGE_ERROR,
    }
}

/// The input's lines as arguments: NUL bytes dropped (no argument can hold one), `..` made
/// `__`, absolute paths other than [`ALLOWED_ABSOLUTE`] made relative.
pub fn words(bytes: &[u8]) -> Vec<OsString> {
    bytes
        .split(|&b| b == b'\n')
        .take(MAX_WORDS)
        .map(|w| OsString::from_vec(confine(&w[..w.len().min(MAX_WORD)])))
        .collect()
}

fn confine(word: &[u8]) -> Vec<u8> {
    let mut w: Vec<u8> = word.iter().copied().filter(|&b| b != 0).collect();
    while let Some(i) = w.windows(2).position(|p| p == b"..") {
        w[i..i + 2].copy_from_slice(b"__");
    }
    let value_at = match (w.starts_with(b"--"), w.iter().position(|&b| b == b'=')) {
        (true, Some(eq)) => eq + 1,
        _ => 0,
    };
    let value = &w[value_at..];
    if value.starts_with(b"/") && !ALLOWED_ABSOLUTE.iter().any(|a| value == a.as_bytes()) {
        w.insert(value_at, b'.');
    }
    w
}

/// The files every run starts with (the symlink `link.png` points at `out.png`, which a run
/// may create).
pub const FIXTURES: &[&str] = &[
    "m.onnx",
    "noise.npy",
    "noise8.npy",
    "sched.json",
    "unet.json",
    "flat/model.onnx",
    "flat/scheduler_config.json",
    "flat/config.json",
    "link.png",
];

fn write_fixtures(dir: &Path) {
    static FILES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    let files = FILES.get_or_init(|| {
        let model = gen_corpus::divide_model(false);
        let noise = |size| edgediff_io::npy::encode_f32(&vec![0.5; 3 * size * size], &[1, 3, size, size]).unwrap();
        let (sched, unet) = (gen_corpus::SCHEDULER_CONFIG.as_bytes(), gen_corpus::UNET_CONFIG.as_bytes());
        vec![
            ("m.onnx", model.clone()),
            ("noise.npy", noise(16)),
            ("noise8.npy", noise(8)),
            ("sched.json", sched.to_vec()),
            ("unet.json", unet.to_vec()),
            ("flat/model.onnx", model),
            ("flat/scheduler_config.json", sched.to_vec()),
            ("flat/config.json", unet.to_vec()),
        ]
    });
    std::fs::create_dir_all(dir.join("flat")).expect("create the fixture folder");
    std::fs::create_dir_all(dir.join("dir")).expect("create the fixture folder");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).expect("write a fixture");
    }
    std::os::unix::fs::symlink("out.png", dir.join("link.png")).expect("create the fixture symlink");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_cannot_name_paths_outside_the_scratch_folder() {
        let got = words(b"--model=/etc/passwd\n../x\n/dev/null\n/tmp/a\n--save-raw=/dev/full\na\0b\n--meta=k=/v");
        let want =
            ["--model=./etc/passwd", "__/x", "/dev/null", "./tmp/a", "--save-raw=/dev/full", "ab", "--meta=k=/v"];
        assert_eq!(got, want.map(OsString::from));
        assert_eq!(words(b"/..."), [OsString::from("./__.")]);
    }
}
