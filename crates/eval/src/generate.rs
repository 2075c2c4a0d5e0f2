//! `train eval --model`: generate the samples to score with the edge runtime itself (tract, the
//! code path that ships), so the number describes what users will actually get.
//!
//! Image i is sampled with seed `first_seed + i` (the runtime's `image_seed` layout), so it is
//! exactly what `sampler --model M --seed first_seed+i` produces, whatever `batch` is (with
//! `class` / `guidance`: what `sampler --class C --guidance W` produces).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use edgediff_core::meta::ModelMeta;
use edgediff_core::SamplerSettings;
use edgediff_runtime::sampling::{sample, SampleRequest};
use edgediff_runtime::Denoiser;

use super::images::ImageSet;
use super::EvalError;

/// How to sample.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub count: usize,
    /// Images per network evaluation.
    pub batch: usize,
    /// tract threads (results do not depend on it).
    pub threads: usize,
    pub first_seed: u64,
    /// Class-conditional models: the class index to sample (`None` = the null class) and the
    /// classifier-free guidance scale (`None` = 1).
    pub class: Option<usize>,
    pub guidance: Option<f32>,
}

/// Loads the ONNX model (metadata only): its [`ModelMeta`] decides the scheduler's prediction
/// type and clipping and the image size.
pub fn model_meta(onnx: &Path) -> Result<(Vec<u8>, ModelMeta), EvalError> {
    let bytes = edgediff_runtime::source::read_model(onnx, None)
        .map_err(|e| EvalError::Read { path: onnx.to_path_buf(), reason: e.to_string() })?;
    let (meta, _) = Denoiser::inspect(&bytes, &BTreeMap::new())
        .map_err(|e| EvalError::Model { path: onnx.to_path_buf(), reason: e.to_string() })?;
    Ok((bytes, meta))
}

/// Samples `opts.count` images with the runtime. `progress(done, total, seconds)` is called
/// after each batch. A final partial batch gets its own plan of the right size.
pub fn generate(
    onnx: &Path,
    bytes: &[u8],
    settings: &SamplerSettings,
    opts: &GenerateOptions,
    mut progress: impl FnMut(usize, usize, f64),
) -> Result<ImageSet, EvalError> {
    let model_err =
        |e: edgediff_runtime::RuntimeError| EvalError::Model { path: onnx.to_path_buf(), reason: e.to_string() };
    let batch = opts.batch.clamp(1, opts.count.max(1));
    let request = |seed: u64, n: usize| SampleRequest {
        seed,
        settings: settings.clone(),
        init_noise: None,
        class_labels: opts.class.map(|c| vec![c as i64; n]),
        guidance: opts.guidance,
        memory_budget: None,
    };
    // The network batch is twice the images under classifier-free guidance.
    let plan = |n: usize| {
        let net_batch = request(0, n).network_batch(n)?;
        Denoiser::from_onnx_bytes(bytes, &BTreeMap::new())?.into_network(net_batch, opts.threads)
    };
    let mut net = plan(batch).map_err(model_err)?;
    let mut images = batch;
    let meta = net.meta.clone();
    let mut data = Vec::with_capacity(opts.count * meta.image_len());
    let started = Instant::now();
    let mut done = 0;
    while done < opts.count {
        let n = batch.min(opts.count - done);
        if n != images {
            net = plan(n).map_err(model_err)?;
            images = n;
        }
        let req = request(opts.first_seed.wrapping_add(done as u64), n);
        let out = sample(&mut net, &req, |_| {}).map_err(model_err)?;
        data.extend_from_slice(&out.x0);
        done += n;
        progress(done, opts.count, started.elapsed().as_secs_f64());
    }
    Ok(ImageSet { channels: meta.channels, size: meta.image_size, data })
}
