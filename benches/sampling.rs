//! The whole sampling loop on the default model, and the part of it that is not the network.
//!
//! - `sample-sprites/ddim50-tract-<precision>/t<threads>`: one 50-step DDIM (eta 0) image through
//!   `edgediff_runtime::sample`, exactly what `sampler --steps 50` runs after loading.
//! - `overhead-sprites/ddim50-eta0` and `.../ddim50-eta1`: the same loop with the network left
//!   out: scheduler set-up, drawing x_T, per step the timestep buffer, the finite check of the
//!   prediction and the scheduler step, plus (eta 1) a fresh noise draw every step. Divided by
//!   the whole sample it shows the overhead is negligible.
//!
//! Run: `cargo bench --bench sampling`. Under `cargo test` it does nothing (CI compiles only).

mod support;

use std::hint::black_box;

use anyhow::Result;
use criterion::{BenchmarkId, Criterion, SamplingMode};
use edgediff_core::meta::ModelMeta;
use edgediff_core::{build_scheduler, image_seed, GaussianStream, SamplerSettings};
use edgediff_runtime::{sample, Denoiser, SampleRequest};
use support::models::default_model;

const STEPS: usize = 50;

fn main() {
    support::criterion_main("sampling", run);
}

/// The sampler's defaults (`--steps 50 --eta E`, leading spacing).
fn ddim(eta: f32) -> SamplerSettings {
    SamplerSettings { eta, ..SamplerSettings::ddim(STEPS) }
}

fn run(c: &mut Criterion) -> Result<()> {
    let model = default_model()?;
    let bytes = model.bytes()?;
    let meta = Denoiser::inspect(&bytes, &Default::default())?.0;

    let mut group = c.benchmark_group("sample-sprites");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for threads in support::THREADS {
        let mut net = Denoiser::from_onnx_bytes(&bytes, &Default::default())?.into_network(1, threads)?;
        let request = SampleRequest {
            seed: 0,
            settings: ddim(0.0),
            init_noise: None,
            class_labels: None,
            guidance: None,
            memory_budget: None,
        };
        sample(&mut net, &request, |_| {})?; // fails here, not inside the timed loop
        let id = BenchmarkId::new(format!("ddim{STEPS}-tract-{}", model.precision), format!("t{threads}"));
        group.bench_function(id, |b| {
            b.iter(|| match sample(&mut net, black_box(&request), |_| {}) {
                Ok(out) => out.x0,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("overhead-sprites");
    let len = meta.image_len();
    let mut eps = vec![0f32; len];
    GaussianStream::new(1).fill(&mut eps); // a stand-in prediction: step cost does not depend on it
    for eta in [0.0f32, 1.0] {
        let cfg = ddim(eta);
        scheduler_loop(&meta, &cfg, &eps)?;
        group.bench_function(format!("ddim{STEPS}-eta{eta}"), |b| {
            b.iter(|| match scheduler_loop(&meta, black_box(&cfg), black_box(&eps)) {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    std::process::exit(1);
                }
            })
        });
    }
    group.finish();
    Ok(())
}

/// `edgediff_runtime::sample`'s loop for one image with `eps` in place of the network output.
fn scheduler_loop(meta: &ModelMeta, cfg: &SamplerSettings, eps: &[f32]) -> Result<Vec<f32>> {
    let mut scheduler = build_scheduler(&meta.schedule, cfg)?;
    let timesteps = scheduler.timesteps().to_vec();
    let mut stream = GaussianStream::new(image_seed(0, 0));
    let mut x = vec![0f32; eps.len()];
    stream.fill(&mut x);
    let mut noise = vec![0f32; x.len()];
    for (i, &t) in timesteps.iter().enumerate() {
        let t_in = black_box(vec![t as f32; 1]);
        let out = black_box(eps);
        if out.iter().any(|v| !v.is_finite()) {
            anyhow::bail!("non-finite stand-in prediction at step {i} (t={})", t_in[0]);
        }
        let z = if scheduler.needs_noise(i) {
            stream.fill(&mut noise);
            Some(noise.as_slice())
        } else {
            None
        };
        scheduler.step(i, out, &mut x, z);
    }
    Ok(x)
}
