//! Device profiles: one TOML file per board in `firmware-sim/profiles/`, so adding a device is
//! adding a file. A profile names the emulated CPU, the tract kernel family, the board's RAM and
//! the memory budget the sampler must stay within, the thread count, and the parity gates per
//! precision.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::error::SimError;

/// Values `TRACT_CPU_AARCH64_KIND` understands (tract-linalg 0.23.9, `arm64::Kind::choose`).
pub const TRACT_KINDS: &[&str] = &["a53", "a55", "a72", "a73", "a75", "neoverse", "applem", "generic"];

/// Weight precision of the model a run checks; each has its own gates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Fp32,
    Int8,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        })
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fp32" => Ok(Precision::Fp32),
            "int8" => Ok(Precision::Int8),
            other => Err(format!("unknown precision `{other}` (expected fp32 or int8)")),
        }
    }
}

/// Pass/fail thresholds for one precision.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// Minimum PSNR of the final sample against the fp32 reference x0, in dB (see
    /// `parity::psnr_db`). Every precision is judged against the same fp32 x0: what matters on
    /// the board is how far its image is from the model as trained, not from another quantised
    /// run.
    pub min_psnr_db: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    description: String,
    qemu_cpu: String,
    tract_kind: String,
    board_ram_mib: u64,
    memory_budget_mib: u64,
    threads: u32,
    #[serde(default)]
    gates: BTreeMap<String, Gate>,
}

#[derive(Debug, Clone)]
pub struct Profile {
    /// The file stem, e.g. `cortex-a53`.
    pub name: String,
    pub path: PathBuf,
    pub description: String,
    pub qemu_cpu: String,
    pub tract_kind: String,
    pub board_ram_mib: u64,
    pub memory_budget_mib: u64,
    pub threads: u32,
    pub gates: BTreeMap<Precision, Gate>,
}

impl Profile {
    /// Parses and validates one profile; `name` is what the CLI calls it.
    pub fn parse(name: &str, path: &Path, text: &str) -> Result<Profile, SimError> {
        let bad = |message: String| SimError::BadProfile { path: path.to_path_buf(), message };
        let file: ProfileFile = toml::from_str(text).map_err(|e| bad(e.message().replace('\n', " ")))?;
        if file.qemu_cpu.trim().is_empty() {
            return Err(bad("qemu_cpu is empty".into()));
        }
        if !TRACT_KINDS.contains(&file.tract_kind.as_str()) {
            return Err(bad(format!("tract_kind `{}` is not one of {}", file.tract_kind, TRACT_KINDS.join(", "))));
        }
        if file.threads == 0 || file.threads > 64 {
            return Err(bad(format!("threads = {} (expected 1..=64)", file.threads)));
        }
        if file.memory_budget_mib == 0 || file.memory_budget_mib > file.board_ram_mib {
            return Err(bad(format!(
                "memory_budget_mib = {} must be positive and at most board_ram_mib = {}",
                file.memory_budget_mib, file.board_ram_mib
            )));
        }
        let mut gates = BTreeMap::new();
        for (key, gate) in file.gates {
            let precision: Precision = key.parse().map_err(|e: String| bad(format!("[gates.{key}]: {e}")))?;
            if !gate.min_psnr_db.is_finite() || gate.min_psnr_db <= 0.0 {
                return Err(bad(format!(
                    "[gates.{key}] min_psnr_db = {} (expected a positive number)",
                    gate.min_psnr_db
                )));
            }
            gates.insert(precision, gate);
        }
        Ok(Profile {
            name: name.to_string(),
            path: path.to_path_buf(),
            description: file.description,
            qemu_cpu: file.qemu_cpu,
            tract_kind: file.tract_kind,
            board_ram_mib: file.board_ram_mib,
            memory_budget_mib: file.memory_budget_mib,
            threads: file.threads,
            gates,
        })
    }

    /// The memory budget in bytes.
    pub fn memory_budget_bytes(&self) -> u64 {
        self.memory_budget_mib * 1024 * 1024
    }

    /// The gate for `precision`, or an error saying the profile sets none (yet).
    pub fn gate(&self, precision: Precision) -> Result<&Gate, SimError> {
        self.gates.get(&precision).ok_or_else(|| {
            SimError::Invalid(format!(
                "profile {} sets no {precision} gate ([gates.{precision}] in {}); {precision} parity cannot be judged yet",
                self.name,
                self.path.display()
            ))
        })
    }
}

/// Every profile in `dir` (files `*.toml`), sorted by name.
pub fn load_all(dir: &Path) -> Result<Vec<Profile>, SimError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SimError::file(dir, e))?;
    let mut profiles = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| SimError::file(dir, e))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        let text = std::fs::read_to_string(&path).map_err(|e| SimError::file(&path, e))?;
        profiles.push(Profile::parse(&name, &path, &text)?);
    }
    profiles.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(profiles)
}

/// The profile called `name` in `dir`.
pub fn find(dir: &Path, name: &str) -> Result<Profile, SimError> {
    let all = load_all(dir)?;
    let known = all.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ");
    all.into_iter().find(|p| p.name == name).ok_or_else(|| SimError::UnknownProfile { name: name.to_string(), known })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        description = "test board"
        qemu_cpu = "cortex-a53"
        tract_kind = "a53"
        board_ram_mib = 512
        memory_budget_mib = 128
        threads = 1
        [gates.fp32]
        min_psnr_db = 50.0
    "#;

    #[test]
    fn parses_a_profile_with_gates() {
        let p = Profile::parse("t", Path::new("t.toml"), GOOD).unwrap();
        assert_eq!(p.qemu_cpu, "cortex-a53");
        assert_eq!(p.memory_budget_bytes(), 128 << 20);
        assert_eq!(p.gate(Precision::Fp32).unwrap().min_psnr_db, 50.0);
        // A profile without [gates.int8] refuses int8 rather than inventing a threshold.
        let err = p.gate(Precision::Int8).unwrap_err().to_string();
        assert!(err.contains("no int8 gate"), "{err}");
        let both =
            Profile::parse("t", Path::new("t.toml"), &format!("{GOOD}[gates.int8]\nmin_psnr_db = 35.0\n")).unwrap();
        assert_eq!(both.gate(Precision::Int8).unwrap().min_psnr_db, 35.0);
        assert_eq!(both.gates.keys().copied().collect::<Vec<_>>(), [Precision::Fp32, Precision::Int8]);
    }

    #[test]
    fn rejects_inconsistent_profiles() {
        let cases = [
            (GOOD.replace("\"a53\"", "\"a99\""), "tract_kind"),
            (GOOD.replace("memory_budget_mib = 128", "memory_budget_mib = 1024"), "at most board_ram_mib"),
            (GOOD.replace("threads = 1", "threads = 0"), "threads"),
            (GOOD.replace("[gates.fp32]", "[gates.fp16]"), "unknown precision"),
            (GOOD.replace("threads = 1", "threads = 1\ncolour = 3"), "colour"),
        ];
        for (text, want) in cases {
            let err = Profile::parse("t", Path::new("t.toml"), &text).unwrap_err().to_string();
            assert!(err.contains(want), "expected `{want}` in: {err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn shipped_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles");
        let all = load_all(&dir).unwrap();
        let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a53-64mib", "cortex-a53", "cortex-a72", "cortex-a76"]);
        for p in &all {
            assert!(p.gate(Precision::Fp32).unwrap().min_psnr_db >= 50.0, "{}", p.name);
            // The quantisation issue's quality threshold for int8 against the fp32 reference.
            assert_eq!(p.gate(Precision::Int8).unwrap().min_psnr_db, 35.0, "{}", p.name);
        }
        let err = find(&dir, "cortex-m4").unwrap_err().to_string();
        assert!(err.contains("unknown profile `cortex-m4`") && err.contains("cortex-a53"), "{err}");
    }
}
