//! The files `train sample` writes:
//! ```text
//! DIR/seed-<S>/x_T.npy     float32 [1, C, H, W]: the starting noise
//! DIR/seed-<S>/x0.npy      float32 [1, C, H, W]: the final sample, before quantisation
//! DIR/seed-<S>/sample.png  8-bit PNG of x0 (the runtime's pixel mapping)
//! DIR/reference.json       settings and provenance; written last, so its presence means
//!                          every file it lists is complete
//! ```
//! Every file is written to a temporary name and renamed into place.

use std::path::Path;

use edgediff_core::meta::ModelMeta;
use edgediff_io::npy;
use edgediff_io::write_atomic;
use edgediff_runtime::pixels::to_pixels;
use serde_json::{json, Value};

use super::{ReferenceError, ReferenceRun, ReferenceSample};

/// Facts about how the reference was made (see `provenance`).
#[derive(Debug, Clone)]
pub struct Provenance {
    /// `cpu`, or `cuda` with the GPU's name.
    pub device: String,
    pub burn_version: String,
    pub date: String,
    /// The run directory the weights came from.
    pub run: String,
    /// The ONNX file given with `--onnx` and its SHA-256.
    pub onnx: Option<(String, String)>,
    /// The exact command line that regenerates the files, run from `cwd`.
    pub command: String,
    pub cwd: String,
    pub seconds: f64,
}

/// Directory name of one seed's files.
pub fn seed_dir(seed: u64) -> String {
    format!("seed-{seed}")
}

/// Encodes one CHW image (the model's value range) as an 8-bit grey or RGB PNG.
pub fn png_bytes(image: &[f32], meta: &ModelMeta) -> Result<Vec<u8>, String> {
    let s = meta.image_size as u32;
    let pixels = to_pixels(image, meta);
    let mut out = Vec::new();
    let cursor = &mut std::io::Cursor::new(&mut out);
    let result = match meta.channels {
        1 => image::GrayImage::from_raw(s, s, pixels).map(|img| img.write_to(cursor, image::ImageFormat::Png)),
        _ => image::RgbImage::from_raw(s, s, pixels).map(|img| img.write_to(cursor, image::ImageFormat::Png)),
    };
    match result {
        Some(Ok(())) => Ok(out),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("pixel buffer does not match the image size".into()),
    }
}

fn write_sample(dir: &Path, sample: &ReferenceSample, meta: &ModelMeta) -> Result<(), ReferenceError> {
    let werr = |path: &Path, reason: String| ReferenceError::Write { path: path.display().to_string(), reason };
    std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
    let shape = [1, meta.channels, meta.image_size, meta.image_size];
    npy::write_f32(&dir.join("x_T.npy"), &sample.x_t, &shape).map_err(|e| werr(&e.path, e.message))?;
    npy::write_f32(&dir.join("x0.npy"), &sample.x0, &shape).map_err(|e| werr(&e.path, e.message))?;
    let png = dir.join("sample.png");
    let bytes = png_bytes(&sample.x0, meta).map_err(|e| werr(&png, e))?;
    write_atomic(&png, &bytes).map_err(|e| werr(&e.path, e.message))
}

/// An f32 as the JSON number with its shortest round-trip decimal (`0.0001`, not the f64
/// widening `0.00009999999747378752`).
fn short(v: f32) -> Value {
    v.to_string().parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

/// The content of `reference.json`.
pub fn reference_json(run: &ReferenceRun, p: &Provenance) -> Value {
    let m = &run.meta;
    let s = &run.scheduler;
    json!({
        "format": 1,
        "model_name": m.model_name,
        "run": p.run,
        "training_steps": m.training_steps,
        "onnx": p.onnx.as_ref().map(|(path, sha)| json!({
            "path": path,
            "sha256": sha,
            "weights_match_run": run.onnx_weights_match,
        })),
        "model": {
            "image_size": m.image_size,
            "channels": m.channels,
            "prediction_type": m.schedule.prediction_type.to_string(),
            "beta_schedule": m.schedule.beta_schedule.to_string(),
            "num_train_timesteps": m.schedule.num_train_timesteps,
            "beta_start": short(m.schedule.beta_start),
            "beta_end": short(m.schedule.beta_end),
            "clip_sample": m.schedule.clip_sample.map(short),
            "value_range": [short(m.value_range.0), short(m.value_range.1)],
        },
        "scheduler": s.kind.to_string(),
        "steps": s.steps,
        "spacing": s.spacing.to_string(),
        "steps_offset": s.steps_offset,
        "set_alpha_to_one": s.set_alpha_to_one,
        "eta": short(s.eta),
        "class": run.class.class.and_then(|c| m.class_names.get(c).cloned()),
        "class_index": run.class.class,
        "guidance": run.class.class.map(|_| short(run.class.guidance.unwrap_or(1.0))),
        "timesteps": run.timesteps,
        "seeds": run.samples.iter().map(|x| x.seed).collect::<Vec<_>>(),
        "noise": "per seed S: GaussianStream(image_seed(S, 0) = S); first C*H*W normals = x_T, then C*H*W per step with sigma > 0",
        "files": run.samples.iter().map(|x| {
            let d = seed_dir(x.seed);
            json!({ "seed": x.seed, "x_T": format!("{d}/x_T.npy"), "x0": format!("{d}/x0.npy"), "png": format!("{d}/sample.png") })
        }).collect::<Vec<_>>(),
        "device": p.device,
        "burn_version": p.burn_version,
        "edgediff_train_version": env!("CARGO_PKG_VERSION"),
        "date": p.date,
        "seconds": p.seconds,
        "command": p.command,
        "cwd": p.cwd,
    })
}

/// Writes every seed's files, then `reference.json`.
pub fn write_reference(out: &Path, run: &ReferenceRun, p: &Provenance) -> Result<(), ReferenceError> {
    let werr = |path: &Path, reason: String| ReferenceError::Write { path: path.display().to_string(), reason };
    std::fs::create_dir_all(out).map_err(|e| werr(out, e.to_string()))?;
    for sample in &run.samples {
        write_sample(&out.join(seed_dir(sample.seed)), sample, &run.meta)?;
    }
    let path = out.join("reference.json");
    let text = serde_json::to_string_pretty(&reference_json(run, p)).map_err(|e| werr(&path, e.to_string()))?;
    write_atomic(&path, format!("{text}\n").as_bytes()).map_err(|e| werr(&e.path, e.message))
}
