//! Reference vectors: what the emulated sampler must reproduce.
//!
//! Layout (written by `train sample`, read here):
//! ```text
//! models/reference/<model>/reference.json   settings + provenance
//! models/reference/<model>/seed-<S>/x_T.npy float32 [1,C,H,W], the starting noise
//! models/reference/<model>/seed-<S>/x0.npy  float32 [1,C,H,W], the final sample (model's range)
//! models/reference/<model>/seed-<S>/sample.png
//! ```
//! `reference.json` keys read (as `crates/train/src/reference/files.rs` writes them): `steps`,
//! `seeds`, `scheduler`, `spacing`, `eta` (required); `model_name`, `onnx.sha256` (the exported
//! model the reference was checked against; null when it was sampled from a run's weights
//! only), `device`, `command`, `steps_offset`, `set_alpha_to_one`, and for a class-conditional
//! reference `class` (name) and `guidance` (optional; null or absent = unconditional). Other keys
//! are ignored.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::SimError;

#[derive(Debug, Clone)]
pub struct Reference {
    pub dir: PathBuf,
    pub model: Option<String>,
    pub model_sha256: Option<String>,
    pub steps: u32,
    pub seeds: Vec<u64>,
    pub scheduler: String,
    pub spacing: String,
    pub eta: f64,
    pub steps_offset: Option<u64>,
    pub set_alpha_to_one: Option<bool>,
    pub device: Option<String>,
    pub command: Option<String>,
    /// The class the reference was sampled with (`None` = unconditional / null class).
    pub class: Option<String>,
    /// Its classifier-free guidance scale (`train sample` records it whenever a class is set).
    pub guidance: Option<f64>,
}

/// An f32 array read from `.npy`.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Reference {
    /// Reads `dir/reference.json` and checks that every listed seed has its vectors.
    pub fn load(dir: &Path) -> Result<Reference, SimError> {
        let err = |message: String| SimError::Reference { dir: dir.to_path_buf(), message };
        let v = read_json(dir).map_err(err)?;
        let string = |keys: &[&str]| keys.iter().find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string));
        let need = |key: &str| v.get(key).ok_or_else(|| err(format!("reference.json has no `{key}`")));
        let steps = need("steps")?
            .as_u64()
            .filter(|&s| (1..=100_000).contains(&s))
            .ok_or_else(|| err("`steps` is not a positive integer".into()))?;
        let seeds: Vec<u64> = need("seeds")?
            .as_array()
            .and_then(|a| a.iter().map(Value::as_u64).collect())
            .ok_or_else(|| err("`seeds` is not a list of non-negative integers".into()))?;
        if seeds.is_empty() {
            return Err(err("`seeds` is empty".into()));
        }
        let eta = need("eta")?.as_f64().ok_or_else(|| err("`eta` is not a number".into()))?;
        let (class, guidance) = class_and_guidance(&v).map_err(err)?;
        let reference = Reference {
            dir: dir.to_path_buf(),
            model: string(&["model_name"]),
            model_sha256: v.pointer("/onnx/sha256").and_then(Value::as_str).map(str::to_string),
            steps: steps as u32,
            seeds,
            scheduler: string(&["scheduler"]).ok_or_else(|| err("`scheduler` is not a string".into()))?,
            spacing: string(&["spacing"]).ok_or_else(|| err("`spacing` is not a string".into()))?,
            eta,
            steps_offset: v.get("steps_offset").and_then(Value::as_u64),
            set_alpha_to_one: v.get("set_alpha_to_one").and_then(Value::as_bool),
            device: string(&["device"]),
            command: string(&["command"]),
            class,
            guidance,
        };
        reference.check_vectors()?;
        Ok(reference)
    }

    /// Every listed seed has its x_T and x0.
    fn check_vectors(&self) -> Result<(), SimError> {
        for &seed in &self.seeds {
            for file in ["x_T.npy", "x0.npy"] {
                let p = self.seed_dir(seed).join(file);
                if !p.is_file() {
                    return Err(SimError::Reference {
                        dir: self.dir.clone(),
                        message: format!("seed {seed}: {} is missing", p.display()),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn seed_dir(&self, seed: u64) -> PathBuf {
        self.dir.join(format!("seed-{seed}"))
    }

    pub fn x_t(&self, seed: u64) -> Result<Array, SimError> {
        read_npy(&self.seed_dir(seed).join("x_T.npy"))
    }

    pub fn x0(&self, seed: u64) -> Result<Array, SimError> {
        read_npy(&self.seed_dir(seed).join("x0.npy"))
    }

    /// The seeds to run: all of the reference's, or the requested ones (each must be there).
    pub fn select_seeds(&self, wanted: &[u64]) -> Result<Vec<u64>, SimError> {
        if wanted.is_empty() {
            return Ok(self.seeds.clone());
        }
        for s in wanted {
            if !self.seeds.contains(s) {
                return Err(SimError::Reference {
                    dir: self.dir.clone(),
                    message: format!("has no seed {s} (it has {:?})", self.seeds),
                });
            }
        }
        Ok(wanted.to_vec())
    }
}

/// `dir/reference.json`, parsed; the error is the message `SimError::Reference` carries.
fn read_json(dir: &Path) -> Result<Value, String> {
    let json_path = dir.join("reference.json");
    if !json_path.is_file() {
        return Err("reference.json not found (reference vectors are made by `train sample`)".into());
    }
    let text = std::fs::read_to_string(&json_path).map_err(|e| format!("reference.json: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("reference.json: {e}"))
}

/// The class and guidance scale a conditional reference was sampled with (null or absent:
/// unconditional); a guidance scale needs a class.
fn class_and_guidance(v: &Value) -> Result<(Option<String>, Option<f64>), String> {
    let class = match v.get("class") {
        None | Some(Value::Null) => None,
        Some(Value::String(c)) => Some(c.clone()),
        Some(_) => return Err("`class` is not a class name".into()),
    };
    let guidance = match v.get("guidance") {
        None | Some(Value::Null) => None,
        Some(g) => Some(g.as_f64().filter(|w| *w >= 0.0).ok_or("`guidance` is not a number >= 0")?),
    };
    if guidance.is_some() && class.is_none() {
        return Err("`guidance` is set but `class` is not".into());
    }
    Ok((class, guidance))
}

/// Reads a little-endian float32 `.npy` file.
pub fn read_npy(path: &Path) -> Result<Array, SimError> {
    let (data, shape) = edgediff_io::npy::read_f32(path)?;
    Ok(Array { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_f32_npy(path: &Path, data: &[f32], shape: &[usize]) {
        edgediff_io::npy::write_f32(path, data, shape).unwrap();
    }

    #[test]
    fn loads_a_reference_and_checks_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"format": 1, "model_name": "m", "onnx": {"path": "m.onnx", "sha256": "ab"}, "model": {"image_size": 1},
                       "steps": 4, "seeds": [0, 3], "scheduler": "ddim", "spacing": "leading", "steps_offset": 0,
                       "set_alpha_to_one": true, "eta": 0.0, "device": "cpu", "command": "train sample"}"#;
        std::fs::write(dir.path().join("reference.json"), json).unwrap();
        for seed in [0, 3] {
            let d = dir.path().join(format!("seed-{seed}"));
            std::fs::create_dir_all(&d).unwrap();
            write_f32_npy(&d.join("x_T.npy"), &[1.0, 2.0], &[1, 1, 1, 2]);
            if seed == 0 {
                write_f32_npy(&d.join("x0.npy"), &[0.5, -0.5], &[1, 1, 1, 2]);
            }
        }
        let e = Reference::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("seed 3") && e.contains("x0.npy is missing"), "{e}");
        write_f32_npy(&dir.path().join("seed-3/x0.npy"), &[0.0, 0.0], &[1, 1, 1, 2]);
        let r = Reference::load(dir.path()).unwrap();
        assert_eq!((r.steps, r.seeds.clone(), r.eta), (4, vec![0, 3], 0.0));
        assert_eq!(r.model_sha256.as_deref(), Some("ab"));
        assert_eq!((r.model.as_deref(), r.steps_offset, r.set_alpha_to_one), (Some("m"), Some(0), Some(true)));
        assert_eq!(r.x0(0).unwrap(), Array { shape: vec![1, 1, 1, 2], data: vec![0.5, -0.5] });
        assert_eq!(r.select_seeds(&[]).unwrap(), vec![0, 3]);
        assert!(r.select_seeds(&[7]).unwrap_err().to_string().contains("has no seed 7"));
        assert_eq!((r.class.clone(), r.guidance), (None, None), "no class: unconditional");

        // A guided reference names its class and scale; both must be well-formed.
        let with = |extra: &str| {
            std::fs::write(
                dir.path().join("reference.json"),
                json.replace(r#""eta": 0.0"#, &format!(r#""eta": 0.0, {extra}"#)),
            )
            .unwrap();
            Reference::load(dir.path())
        };
        let r = with(r#""class": "star", "class_index": 5, "guidance": 3.0"#).unwrap();
        assert_eq!((r.class.as_deref(), r.guidance), (Some("star"), Some(3.0)));
        let r = with(r#""class": null, "guidance": null"#).unwrap();
        assert_eq!((r.class, r.guidance), (None, None));
        assert!(with(r#""class": 5"#).unwrap_err().to_string().contains("`class`"));
        assert!(with(r#""class": "star", "guidance": -1"#).unwrap_err().to_string().contains("`guidance`"));
        assert!(with(r#""guidance": 2"#).unwrap_err().to_string().contains("`class` is not"));
    }

    #[test]
    fn missing_or_broken_reference_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let e = Reference::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("reference.json not found") && !e.contains('\n'), "{e}");
        std::fs::write(dir.path().join("reference.json"), r#"{"steps": 0, "seeds": [0]}"#).unwrap();
        let e = Reference::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("`steps`"), "{e}");
    }
}
