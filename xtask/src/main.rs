//! Project tasks. `cargo xtask test` installs what the test suite needs (idempotently, printing
//! each step), checks formatting and clippy, and runs every test; `.ci/run` calls exactly that.
//!
//! Small dependencies only (anyhow, serde_json, the project's io crate): it must build in
//! seconds on a fresh machine.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

mod bench_board;
mod bench_board_markdown;
mod bench_env;
mod bench_markdown;
mod bench_peers;
mod bench_probe;
mod bench_report;

const ORT_VERSION: &str = "1.31.1";
const AARCH64_TARGET: &str = "aarch64-unknown-linux-gnu";
const AARCH64_LINKER_ENV: &str = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
/// The Debian cross tools `APT_PACKAGES` install: emulator, cross gcc (the default linker) and
/// the aarch64 sysroot (passed to qemu as `-L`).
const QEMU: &str = "qemu-aarch64";
const CROSS_GCC: &str = "aarch64-linux-gnu-gcc";
const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";
const APT_PACKAGES: &[&str] = &["qemu-user", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(),
        Some("setup") => setup().map(|_| ()),
        Some("sim") => sim(&args[1..]),
        Some("bench-report") => bench_report::run(&args[1..]),
        Some("board") => bench_board::board_command(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|setup|sim|bench-report>\n  test   install what is missing, then run every test\n  setup  only install what is missing\n  \
                 sim    emulated aarch64 parity per device profile, fp32 and int8: sim [--all | --profile P] [--precision fp32,int8] [firmware-sim run flags]\n  \
                 bench-report  run the benches and write BENCHMARKS.md: bench-report [--quick] [--out FILE]\n  \
                 board  an int8 model on the 64 MiB board profile (firmware-sim a53-64mib, 2 steps): board [MODEL]"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."))
}

/// The cargo running this task (`$CARGO`), for the cargo commands it runs in turn.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("    $ {}", format!("{cmd:?}").replace('"', ""));
    let status = cmd.status().with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{:?} failed with {status}", cmd.get_program());
    }
    Ok(())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// What the tests need from outside Cargo, installed when missing. Returns the ORT library path.
fn setup() -> Result<PathBuf> {
    step(&format!("rust target {AARCH64_TARGET}"));
    let installed =
        Command::new("rustup").args(["target", "list", "--installed"]).output().context("rustup not found")?;
    if String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == AARCH64_TARGET) {
        eprintln!("    present");
    } else {
        run(Command::new("rustup").args(["target", "add", AARCH64_TARGET]))?;
    }

    step("aarch64 cross toolchain and qemu (apt)");
    let cross_ok = have(QEMU) && have(CROSS_GCC) && Path::new(AARCH64_SYSROOT).join("lib/libc.so.6").exists();
    if cross_ok {
        eprintln!("    present");
    } else if is_root() {
        run(Command::new("apt-get").args(["update", "-q"]))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-q"])
            .args(APT_PACKAGES)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        eprintln!("    missing; as root run: apt-get install -y {}", APT_PACKAGES.join(" "));
    }

    step(&format!("ONNX Runtime {ORT_VERSION} (libonnxruntime.so from the PyPI wheel)"));
    let lib = ort_library_path();
    if lib.exists() {
        eprintln!("    present: {}", lib.display());
    } else {
        fetch_ort(&lib)?;
    }
    Ok(lib)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// Where the tests and benches look for ONNX Runtime (see crates/train/tests).
fn ort_library_path() -> PathBuf {
    root().join("target").join("onnxruntime").join(format!("libonnxruntime.so.{ORT_VERSION}"))
}

fn fetch_ort(lib: &Path) -> Result<()> {
    let dir = lib.parent().context("library path has no parent")?;
    let wheels = dir.join("wheel");
    std::fs::create_dir_all(&wheels)?;
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"])
        .arg(format!("onnxruntime=={ORT_VERSION}"))
        .arg("-d")
        .arg(&wheels))?;
    let member = format!("onnxruntime/capi/libonnxruntime.so.{ORT_VERSION}");
    let script = "import glob,sys,zipfile,os\n\
                  w=sorted(glob.glob(os.path.join(sys.argv[1],'onnxruntime-*.whl')))[-1]\n\
                  tmp=sys.argv[3]+'.part'\n\
                  open(tmp,'wb').write(zipfile.ZipFile(w).read(sys.argv[2]))\n\
                  os.chmod(tmp,0o755); os.replace(tmp,sys.argv[3])";
    run(Command::new("python3").arg("-c").arg(script).arg(&wheels).arg(&member).arg(lib))?;
    std::fs::remove_dir_all(&wheels).ok();
    Ok(())
}

fn test() -> Result<()> {
    let lib = setup()?;
    let cargo = crate::cargo();
    code_style(&cargo)?;
    step("test suite (release profile: built once, shared by every test)");
    run(Command::new(&cargo).current_dir(root()).env("ORT_DYLIB_PATH", &lib).args([
        "test",
        "--release",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--examples",
    ]))?;
    fuzz_bounded(&cargo)?;
    step("benches compile (they run with `cargo bench`, not in CI)");
    run(Command::new(&cargo).current_dir(root()).args(["bench", "--no-run", "--workspace"]))?;
    firmware_sim_parity()?;
    qconv_kernels_under_qemu()?;
    step("all tests passed");
    Ok(())
}

/// The fuzz targets of `crates/fuzz` (model loader, metadata, `.npy`, diffusers configs, the
/// sampler CLI), 16 s each with seed 0 (the same cases every run): about 85 s. Runs after the
/// test suite, which built the `sampler` the CLI target starts. `crates/fuzz/README.md` says how
/// to run them longer.
fn fuzz_bounded(cargo: &str) -> Result<()> {
    step("fuzz targets, bounded: 16 s each (crates/fuzz)");
    run(Command::new(cargo).current_dir(root()).args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "edgediff-fuzz",
        "--",
        "run",
        "--seconds",
        "16",
        "--seed",
        "0",
    ]))
}

/// The habits the code keeps, checked before anything runs: rustfmt's layout, and clippy with
/// every warning an error (the workspace lints add: a `// SAFETY:` comment on every unsafe
/// block, no unsafe operation outside an unsafe block, std APIs within each crate's
/// `rust-version`). The int8 kernels are also linted for aarch64, where their NEON code lives.
fn code_style(cargo: &str) -> Result<()> {
    step("formatting (cargo fmt --check)");
    run(Command::new(cargo).current_dir(root()).args(["fmt", "--all", "--check"]))?;
    step("clippy, warnings are errors (release profile, every target)");
    run(Command::new(cargo).current_dir(root()).args([
        "clippy",
        "--release",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(Command::new(cargo).current_dir(root()).args([
        "clippy",
        "--release",
        "--target",
        AARCH64_TARGET,
        "-p",
        "edgediff-qconv",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

/// The int8 kernels' byte-exactness tests (`crates/qconv/tests`), cross-built for aarch64 and
/// run under qemu: on cortex-a53 (Armv8.0, our `smull`/`sadalp` assembly kernel; no instruction
/// beyond Armv8.0 may appear in it) and cortex-a76 (the same kernel plus the `sdot` one).
/// firmware-sim judges whole images by PSNR against fp32; this checks the kernels' bytes.
fn qconv_kernels_under_qemu() -> Result<()> {
    step("kernels under qemu: crates/qconv and crates/fkernels tests for aarch64 on cortex-a53 and cortex-a76");
    let cargo = crate::cargo();
    let linker = std::env::var(AARCH64_LINKER_ENV).unwrap_or_else(|_| CROSS_GCC.into());
    for cpu in ["cortex-a53", "cortex-a76"] {
        run(Command::new(&cargo)
            .current_dir(root())
            .env(AARCH64_LINKER_ENV, &linker)
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER", format!("{QEMU} -L {AARCH64_SYSROOT} -cpu {cpu}"))
            .args([
                "test",
                "--release",
                "--target",
                AARCH64_TARGET,
                "-p",
                "edgediff-qconv",
                "--test",
                "matches_reference",
            ]))?;
        // The fp32 kernels' unit tests: NEON against the portable kernel, bit for bit.
        run(Command::new(&cargo)
            .current_dir(root())
            .env(AARCH64_LINKER_ENV, &linker)
            .env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER", format!("{QEMU} -L {AARCH64_SYSROOT} -cpu {cpu}"))
            .args(["test", "--release", "--target", AARCH64_TARGET, "-p", "edgediff-fkernels", "--lib"]))?;
    }
    Ok(())
}

/// `cargo xtask sim ARGS`: `firmware-sim run ARGS` (default `--all`: every profile, fp32 and
/// int8 default models; `--precision fp32` or `int8` for one; `firmware-sim run --help` for the
/// rest).
fn sim(args: &[String]) -> Result<()> {
    let cargo = crate::cargo();
    let args: Vec<String> = if args.is_empty() { vec!["--all".into()] } else { args.to_vec() };
    run(Command::new(&cargo)
        .current_dir(root())
        .args(["run", "--quiet", "--release", "-p", "edgediff-firmware-sim", "--", "run"])
        .args(&args))
}

/// The CI parity step: the aarch64 sampler under qemu for one profile, on the default models
/// against the committed fp32 references, first seed, 50 steps (the references' count, so no host
/// re-reference is needed): unconditional in fp32 and int8, then class `star` at the model's
/// guidance 5 (one batch-2 network call per step) in fp32 only, since guidance multiplies int8
/// error by 5 (25 dB on x86_64 too, tests/int8_quality.rs), below the 35 dB int8 gate. int8 adds
/// about 15 s: its 50 steps take 8-15 s under qemu (integer NEON emulates faster than fp32's
/// softfloat); the guided run about 50 s. Runs after the test suite because it cross-builds.
fn firmware_sim_parity() -> Result<()> {
    step("firmware-sim parity: aarch64 sampler under qemu, cortex-a53, default models (fp32 and int8; guided fp32), each also as a batch of 3");
    for model in ["models/sprites-cond.onnx", "models/sprites-cond-int8.onnx"] {
        let path = root().join(model);
        if std::fs::metadata(&path).map(|m| m.len() == 0).unwrap_or(true) {
            bail!("{} is missing or empty: the default models must be committed", path.display());
        }
    }
    let started = std::time::Instant::now();
    let one_seed = ["--profile", "cortex-a53", "--max-seeds", "1", "--max-steps", "50", "--batch-check", "3"];
    let guided = ["--reference", "models/reference/sprites-cond-star", "--out", "target/firmware-sim/star"];
    for (precision, extra) in [("fp32,int8", &[][..]), ("fp32", &guided[..])] {
        let args: Vec<String> =
            one_seed.iter().chain(&["--precision", precision]).chain(extra).map(|a| a.to_string()).collect();
        sim(&args)?;
    }
    eprintln!("    firmware-sim step took {:.0} s (cross build included)", started.elapsed().as_secs_f64());
    Ok(())
}
