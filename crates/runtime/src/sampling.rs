//! The sampling loop: draw x_T, then for each scheduler step evaluate the network and let the
//! core scheduler move the batch one step closer to x_0.
//!
//! Noise follows `edgediff_core::noise`'s documented stream layout: image k of a batch uses its
//! own stream seeded with `image_seed(seed, k)`; its first C*H*W normals are x_T and each
//! noisy step then takes the next C*H*W. So image k of `--batch 4 --seed 7` is the image of
//! `--seed 7+k`, and supplying x_T (`init_noise`) leaves the per-step noise unchanged.
//!
//! Class-conditional models: with classifier-free guidance (`edgediff_core::guidance`) each
//! step is ONE network call on a batch of 2N, `[x; x]` with `[labels; null class]`, so tract
//! runs a single forward per step; the network must be planned for
//! [`SampleRequest::network_batch`] images. Guidance changes only what the network sees: the
//! noise streams are those of the N images, so x_T of image k still depends only on (seed, k).

use std::time::{Duration, Instant};

use edgediff_core::guidance::{combine, Guidance};
use edgediff_core::meta::ModelMeta;
use edgediff_core::{build_scheduler, image_seed, GaussianStream, SamplerSettings};

use crate::error::RuntimeError;
use crate::memory;
use crate::network::Network;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub seed: u64,
    /// Solver, steps, spacing, eta: the user's choices (the model's schedule comes with `net`).
    pub settings: SamplerSettings,
    /// x_T for the whole batch, `[batch, C, H, W]`; `None` draws it from the seed.
    pub init_noise: Option<Vec<f32>>,
    /// Class per image for conditional models; `None` = unconditional (null class).
    pub class_labels: Option<Vec<i64>>,
    /// Classifier-free guidance scale w (needs `class_labels`); `None` = 1, the class alone.
    /// w other than 0 and 1 evaluates conditional and unconditional halves in one call of
    /// twice the batch: plan the network with [`SampleRequest::network_batch`].
    pub guidance: Option<f32>,
    /// Fail when the measured peak heap exceeds this many bytes.
    pub memory_budget: Option<u64>,
}

/// Reported after each step, for progress display.
#[derive(Debug, Clone, Copy)]
pub struct StepProgress {
    pub step: usize,
    pub steps: usize,
    pub timestep: usize,
    pub elapsed: Duration,
}

#[derive(Debug, Clone)]
pub struct SampleOutput {
    /// The starting noise, `[batch, C, H, W]`.
    pub x_t: Vec<f32>,
    /// The final sample in the network's value range, `[batch, C, H, W]`.
    pub x0: Vec<f32>,
    /// Peak heap of the whole process so far, measured (0 without the counting allocator).
    pub peak_heap: usize,
    /// Time spent in network evaluations, and in everything else of the loop.
    pub eval_time: Duration,
    pub loop_time: Duration,
    pub evaluations: usize,
}

impl SampleRequest {
    /// How this request uses the class input (checks the guidance scale).
    pub fn guidance_mode(&self) -> Result<Guidance, RuntimeError> {
        Guidance::new(self.class_labels.is_some(), self.guidance).map_err(|e| RuntimeError::Invalid(e.to_string()))
    }

    /// The batch to plan the network for when sampling `images` images with this request:
    /// `images`, or `2 * images` under classifier-free guidance.
    pub fn network_batch(&self, images: usize) -> Result<usize, RuntimeError> {
        Ok(images * self.guidance_mode()?.evaluations_per_image())
    }

    /// The bytes of the vectors [`sample`] holds for `images` images of `meta`'s size: x, x_T,
    /// the noise, the network's input and output tensors, and under guidance the doubled batch
    /// and the combined prediction.
    pub fn buffer_bytes(&self, images: usize, meta: &ModelMeta) -> Result<u64, RuntimeError> {
        let factor = self.guidance_mode()?.evaluations_per_image() as u64;
        let guided = if factor > 1 { 3 } else { 0 };
        let image = (meta.image_len() as u64).saturating_mul(4).saturating_mul(images as u64);
        Ok(image.saturating_mul(3 + 3 * factor + guided))
    }
}

fn check_budget(budget: Option<u64>, phase: &'static str) -> Result<(), RuntimeError> {
    if let Some(budget) = budget {
        let needed = memory::peak_bytes() as u64;
        if needed > budget {
            return Err(RuntimeError::OverBudget {
                budget: memory::format_size(budget),
                needed: memory::format_size(needed),
                phase,
            });
        }
    }
    Ok(())
}

/// Runs the whole loop on `net`'s batch. The first network evaluation doubles as the memory
/// probe: if loading plus one evaluation already exceeds the budget, sampling stops before
/// any step is taken.
pub fn sample(
    net: &mut Network,
    req: &SampleRequest,
    mut on_step: impl FnMut(StepProgress),
) -> Result<SampleOutput, RuntimeError> {
    if req.memory_budget.is_some() && !memory::is_installed() {
        return Err(RuntimeError::NoAllocator);
    }
    let m = net.meta.clone();
    let guidance = req.guidance_mode()?;
    let factor = guidance.evaluations_per_image();
    if !net.batch.is_multiple_of(factor) {
        return Err(RuntimeError::Invalid(format!(
            "guided sampling needs an even network batch, the network has {}",
            net.batch
        )));
    }
    let batch = net.batch / factor;
    let labels = check_labels(net, req.class_labels.as_deref(), batch)?;
    let mut scheduler = build_scheduler(&m.schedule, &req.settings)?;
    let timesteps = scheduler.timesteps().to_vec();
    let mut streams = NoiseStreams::new(req.seed, batch, m.image_len());
    let mut x = initial_noise(req, &mut streams, batch, &m)?;
    let x_t = x.clone();
    let null = match (net.is_conditional(), guidance, m.null_label()) {
        (true, Guidance::Unconditional | Guidance::ClassifierFree { .. }, None) => {
            return Err(RuntimeError::Invalid(format!(
                "model `{}` has no null (unconditional) class: it samples a given class, unguided",
                m.model_name
            )))
        }
        (_, _, null) => null.unwrap_or(0),
    };
    let mut inputs = GuidedInputs::new(guidance, labels, null, x.len());

    let started = Instant::now();
    let mut eval_time = Duration::ZERO;
    let mut noise = vec![0f32; x.len()];
    for (i, &t) in timesteps.iter().enumerate() {
        let t_in = vec![t as f32; net.batch];
        let eval_start = Instant::now();
        let (sample, labels) = inputs.for_network(&x);
        let out = evaluate(net, sample, &t_in, labels, i, t)?;
        eval_time += eval_start.elapsed();
        if i == 0 {
            check_budget(req.memory_budget, "loading the model and one network evaluation")?;
        }
        let z = scheduler.needs_noise(i).then(|| {
            streams.fill(&mut noise);
            noise.as_slice()
        });
        scheduler.step(i, inputs.prediction(&out), &mut x, z);
        if let Some(what) = non_finite(&x) {
            return Err(RuntimeError::NonFiniteSample { step: i, timestep: t, what });
        }
        on_step(StepProgress { step: i + 1, steps: timesteps.len(), timestep: t, elapsed: started.elapsed() });
    }
    check_budget(req.memory_budget, "sampling")?;
    Ok(SampleOutput {
        x_t,
        x0: x,
        peak_heap: memory::peak_bytes(),
        eval_time,
        loop_time: started.elapsed().saturating_sub(eval_time),
        evaluations: timesteps.len(),
    })
}

/// The batch's noise: image k draws from its own stream, seeded with `image_seed(seed, k)`.
struct NoiseStreams {
    streams: Vec<GaussianStream>,
    per_image: usize,
}

impl NoiseStreams {
    fn new(seed: u64, images: usize, per_image: usize) -> NoiseStreams {
        NoiseStreams { streams: (0..images).map(|k| GaussianStream::new(image_seed(seed, k))).collect(), per_image }
    }

    /// The next C·H·W normals of every image's stream, image after image.
    fn fill(&mut self, out: &mut [f32]) {
        for (stream, chunk) in self.streams.iter_mut().zip(out.chunks_mut(self.per_image)) {
            stream.fill(chunk);
        }
    }
}

/// x_T: drawn from the streams (always, so that every later step draws the same noise), then
/// replaced by the request's own x_T if it gives one.
fn initial_noise(
    req: &SampleRequest,
    streams: &mut NoiseStreams,
    batch: usize,
    m: &ModelMeta,
) -> Result<Vec<f32>, RuntimeError> {
    let mut x = vec![0f32; batch * m.image_len()];
    streams.fill(&mut x);
    if let Some(init) = &req.init_noise {
        if init.len() != x.len() {
            return Err(RuntimeError::InitNoiseShape {
                expected: x.len(),
                got: init.len(),
                shape: format!("[{batch}, {}, {}, {}]", m.channels, m.image_size, m.image_size),
            });
        }
        x.copy_from_slice(init);
    }
    Ok(x)
}

/// What the network sees at each step and how its output becomes the prediction: under
/// classifier-free guidance `[x; x]` with `[labels; null]`, the two halves then combined; else
/// x and the labels as they are.
struct GuidedInputs {
    guidance: Guidance,
    labels: Option<Vec<i64>>,
    /// `[x; x]` (empty without guidance).
    doubled: Vec<f32>,
    /// The combined prediction (empty without guidance).
    combined: Vec<f32>,
}

impl GuidedInputs {
    /// `null` is the null class's label; `len` the length of the batch's x.
    fn new(guidance: Guidance, labels: Option<&[i64]>, null: i64, len: usize) -> GuidedInputs {
        let guided = matches!(guidance, Guidance::ClassifierFree { .. });
        let labels = match guidance {
            Guidance::Unconditional => None,
            Guidance::Conditional => labels.map(<[i64]>::to_vec),
            Guidance::ClassifierFree { .. } => {
                labels.map(|l| l.iter().copied().chain(std::iter::repeat_n(null, l.len())).collect())
            }
        };
        let (doubled, combined) =
            if guided { (vec![0f32; 2 * len], vec![0f32; len]) } else { (Vec::new(), Vec::new()) };
        GuidedInputs { guidance, labels, doubled, combined }
    }

    /// The network's sample and class-label inputs for the batch's `x`.
    fn for_network<'a>(&'a mut self, x: &'a [f32]) -> (&'a [f32], Option<&'a [i64]>) {
        if self.doubled.is_empty() {
            return (x, self.labels.as_deref());
        }
        for half in self.doubled.chunks_mut(x.len()) {
            half.copy_from_slice(x);
        }
        (&self.doubled, self.labels.as_deref())
    }

    /// The prediction the scheduler steps on, from the network's output.
    fn prediction<'a>(&'a mut self, out: &'a [f32]) -> &'a [f32] {
        match self.guidance {
            Guidance::ClassifierFree { scale } => {
                let (cond, uncond) = out.split_at(self.combined.len());
                combine(cond, uncond, scale, &mut self.combined);
                &self.combined
            }
            Guidance::Unconditional | Guidance::Conditional => out,
        }
    }
}

/// One network evaluation (between the markers firmware-sim counts instructions within), its
/// output checked for NaN and Inf.
fn evaluate(
    net: &mut Network,
    input: &[f32],
    timesteps: &[f32],
    labels: Option<&[i64]>,
    step: usize,
    timestep: usize,
) -> Result<Vec<f32>, RuntimeError> {
    crate::marker::begin_eval();
    let out = net.eval(input, timesteps, labels);
    crate::marker::end_eval();
    let out = out.map_err(|message| RuntimeError::Eval { step, timestep, message })?;
    if let Some(what) = non_finite(&out) {
        return Err(RuntimeError::NonFinite { step, timestep, what });
    }
    Ok(out)
}

/// "NaN" or "Inf" if `values` holds one.
fn non_finite(values: &[f32]) -> Option<&'static str> {
    let bad = values.iter().find(|v| !v.is_finite())?;
    Some(if bad.is_nan() { "NaN" } else { "Inf" })
}

/// Class labels must come with a conditional model, one per image, each a class index or the
/// null class (`class_names.len()`, where the model has one).
fn check_labels<'a>(
    net: &Network,
    labels: Option<&'a [i64]>,
    images: usize,
) -> Result<Option<&'a [i64]>, RuntimeError> {
    let Some(labels) = labels else { return Ok(None) };
    if !net.is_conditional() {
        return Err(RuntimeError::Invalid(
            "class labels given, but the model is not class-conditional (no `class_labels` input)".into(),
        ));
    }
    if labels.len() != images {
        return Err(RuntimeError::Invalid(format!(
            "expected {images} class labels (one per image), got {}",
            labels.len()
        )));
    }
    let count = net.meta.label_count() as i64;
    if let Some(bad) = labels.iter().find(|&&l| !(0..count).contains(&l)) {
        let null = match net.meta.null_label() {
            Some(null) => format!(" ({null} = the null class)"),
            None => " (the model has no null class)".into(),
        };
        return Err(RuntimeError::Invalid(format!("class label {bad} is outside 0..={}{null}", count - 1)));
    }
    Ok(Some(labels))
}
