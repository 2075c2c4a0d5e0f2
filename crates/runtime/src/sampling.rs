//! The sampling loop: draw x_T, then for each scheduler step evaluate the network and let the
//! core scheduler move the batch one step closer to x_0.
//!
//! Noise follows `edgediff_core::noise`'s documented stream layout: image k of a batch uses its
//! own stream seeded with `image_seed(seed, k)`; its first C*H*W normals are x_T and each
//! noisy step then takes the next C*H*W. So image k of `--batch 4 --seed 7` is the image of
//! `--seed 7+k`, and supplying x_T (`init_noise`) leaves the per-step noise unchanged.

use std::time::{Duration, Instant};

use edgediff_core::{build_scheduler, image_seed, GaussianStream, NoiseSchedule, SchedulerConfig};

use crate::error::RuntimeError;
use crate::memory;
use crate::network::Network;

/// What to sample.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub seed: u64,
    pub scheduler: SchedulerConfig,
    /// x_T for the whole batch, `[batch, C, H, W]`; `None` draws it from the seed.
    pub init_noise: Option<Vec<f32>>,
    /// Class per image for conditional models; `None` = unconditional (null class).
    pub class_labels: Option<Vec<i64>>,
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
pub fn sample(net: &mut Network, req: &SampleRequest, mut on_step: impl FnMut(StepProgress)) -> Result<SampleOutput, RuntimeError> {
    if req.memory_budget.is_some() && !memory::is_installed() {
        return Err(RuntimeError::NoAllocator);
    }
    let m = net.meta.clone();
    let (batch, per_image) = (net.batch, m.image_len());
    let schedule = NoiseSchedule::new(m.beta_schedule, m.num_train_timesteps, m.beta_start, m.beta_end)?;
    let mut scheduler = build_scheduler(&req.scheduler, &schedule)?;
    let timesteps = scheduler.timesteps().to_vec();

    let mut streams: Vec<GaussianStream> = (0..batch).map(|k| GaussianStream::new(image_seed(req.seed, k))).collect();
    let mut x = vec![0f32; batch * per_image];
    for (stream, chunk) in streams.iter_mut().zip(x.chunks_mut(per_image)) {
        stream.fill(chunk);
    }
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
    let x_t = x.clone();
    if let Some(labels) = &req.class_labels {
        if labels.len() != batch {
            return Err(RuntimeError::Invalid(format!("expected {batch} class labels, got {}", labels.len())));
        }
    }

    let started = Instant::now();
    let mut eval_time = Duration::ZERO;
    let mut noise = vec![0f32; x.len()];
    for (i, &t) in timesteps.iter().enumerate() {
        let t_in = vec![t as f32; batch];
        let eval_start = Instant::now();
        crate::marker::begin_eval();
        let out = net.eval(&x, &t_in, req.class_labels.as_deref());
        crate::marker::end_eval();
        let out = out.map_err(|message| RuntimeError::Eval { step: i, timestep: t, message })?;
        eval_time += eval_start.elapsed();
        if let Some(bad) = out.iter().find(|v| !v.is_finite()) {
            let what = if bad.is_nan() { "NaN" } else { "Inf" };
            return Err(RuntimeError::NonFinite { step: i, timestep: t, what });
        }
        if i == 0 {
            check_budget(req.memory_budget, "loading the model and one network evaluation")?;
        }
        let z = if scheduler.needs_noise(i) {
            for (stream, chunk) in streams.iter_mut().zip(noise.chunks_mut(per_image)) {
                stream.fill(chunk);
            }
            Some(noise.as_slice())
        } else {
            None
        };
        scheduler.step(i, &out, &mut x, z);
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
