//! The host tools the harness needs, checked up front, and the two builds it makes: the
//! aarch64 `sampler` (cargo, cross linker) and the instruction-counting qemu plugin (gcc).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{SimError, APT_INSTALL};

pub const TARGET: &str = "aarch64-unknown-linux-gnu";
pub const LINKER_ENV: &str = "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER";
/// Debian's aarch64 sysroot (libc6-arm64-cross), passed to `qemu-aarch64 -L`.
pub const SYSROOT: &str = "/usr/aarch64-linux-gnu";
pub const QEMU: &str = "qemu-aarch64";

/// Everything found on the host; paths are absolute.
#[derive(Debug, Clone)]
pub struct Toolchain {
    pub root: PathBuf,
    pub cargo: OsString,
    pub qemu: PathBuf,
    pub linker: String,
    pub cc: PathBuf,
    pub sysroot: PathBuf,
}

/// `program` on PATH (or the path itself when it contains a slash).
pub fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

impl Toolchain {
    /// Checks qemu, the cross linker and sysroot, the Rust target and gcc; one error lists
    /// everything missing and the commands that install it.
    pub fn check(root: &Path) -> Result<Toolchain, SimError> {
        let linker = std::env::var(LINKER_ENV).unwrap_or_else(|_| "aarch64-linux-gnu-gcc".into());
        let mut missing = Vec::new();
        let qemu = find_program(QEMU);
        if qemu.is_none() {
            missing.push(QEMU.to_string());
        }
        if find_program(&linker).is_none() {
            missing.push(linker.clone());
        }
        let sysroot = PathBuf::from(SYSROOT);
        if !sysroot.join("lib/libc.so.6").is_file() {
            missing.push(format!("{SYSROOT}/lib/libc.so.6"));
        }
        let cc = find_program("gcc").or_else(|| find_program("cc"));
        if cc.is_none() {
            missing.push("gcc".into());
        }
        let mut install = vec![APT_INSTALL.to_string()];
        if !rust_target_installed() {
            missing.push(format!("rust target {TARGET}"));
            install.push(format!("rustup target add {TARGET}"));
        }
        match (qemu, cc, missing.is_empty()) {
            (Some(qemu), Some(cc), true) => Ok(Toolchain {
                root: root.to_path_buf(),
                cargo: std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()),
                qemu,
                linker,
                cc,
                sysroot,
            }),
            _ => Err(SimError::MissingTools { missing: missing.join(", "), install: install.join(" && ") }),
        }
    }

    /// CPU models this qemu emulates (`qemu-aarch64 -cpu help`).
    pub fn qemu_cpus(&self) -> Result<Vec<String>, SimError> {
        let out = Command::new(&self.qemu)
            .args(["-cpu", "help"])
            .output()
            .map_err(|e| cmd_err("qemu-aarch64 -cpu help", e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .skip_while(|l| !l.starts_with("Available CPUs"))
            .skip(1)
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect())
    }

    /// Cross-builds `sampler` in release for aarch64 (incremental; cargo prints its progress) and
    /// returns the binary.
    pub fn build_sampler(&self) -> Result<PathBuf, SimError> {
        let status = Command::new(&self.cargo)
            .current_dir(&self.root)
            .env(LINKER_ENV, &self.linker)
            .args(["build", "--release", "--target", TARGET, "--package", "edgediff", "--bin", "sampler"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| cmd_err("cargo build (aarch64 sampler)", e))?;
        if !status.success() {
            return Err(cmd_err("cargo build (aarch64 sampler)", format!("{status}; see cargo's messages above")));
        }
        let bin = self.root.join("target").join(TARGET).join("release").join("sampler");
        bin.is_file().then_some(bin.clone()).ok_or_else(|| SimError::file(&bin, "not produced by the build"))
    }

    /// Compiles `firmware-sim/plugin/insn_count.c` into `out_dir/insn_count.so` when the source
    /// is newer than the library (or the library is missing); returns the library.
    pub fn build_plugin(&self, out_dir: &Path) -> Result<PathBuf, SimError> {
        let src = self.root.join("firmware-sim/plugin/insn_count.c");
        let lib = out_dir.join("insn_count.so");
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        if let (Some(s), Some(l)) = (modified(&src), modified(&lib)) {
            if l >= s {
                return Ok(lib);
            }
        }
        std::fs::create_dir_all(out_dir).map_err(|e| SimError::file(out_dir, e))?;
        let tmp = out_dir.join(format!(".insn_count.so.{}.tmp", std::process::id()));
        let out = Command::new(&self.cc)
            .args(["-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o"])
            .arg(&tmp)
            .arg(&src)
            .output()
            .map_err(|e| cmd_err("gcc (qemu plugin)", e))?;
        if !out.status.success() {
            let first =
                String::from_utf8_lossy(&out.stderr).lines().find(|l| l.contains("error")).unwrap_or("").to_string();
            return Err(cmd_err("gcc (qemu plugin)", format!("{}: {first}", out.status)));
        }
        std::fs::rename(&tmp, &lib).map_err(|e| SimError::file(&lib, e))?;
        Ok(lib)
    }

    /// Builds the host (x86_64) `sampler`, for x0 re-references at a step count the reference
    /// does not have.
    pub fn build_host_sampler(&self) -> Result<PathBuf, SimError> {
        let status = Command::new(&self.cargo)
            .current_dir(&self.root)
            .args(["build", "--release", "--package", "edgediff", "--bin", "sampler"])
            .stdout(Stdio::null())
            .status()
            .map_err(|e| cmd_err("cargo build (host sampler)", e))?;
        if !status.success() {
            return Err(cmd_err("cargo build (host sampler)", status.to_string()));
        }
        Ok(self.root.join("target/release/sampler"))
    }
}

fn rust_target_installed() -> bool {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let Ok(out) = Command::new(rustc).args(["--print", "sysroot"]).output() else { return false };
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    sysroot.join("lib/rustlib").join(TARGET).join("lib").is_dir()
}

fn cmd_err(what: &str, e: impl std::fmt::Display) -> SimError {
    SimError::Command { what: what.to_string(), message: e.to_string().replace('\n', " ") }
}
