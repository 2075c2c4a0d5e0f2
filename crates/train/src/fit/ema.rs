//! Exponential moving average of the weights: the EMA model is what gets exported, because
//! diffusion samples from averaged weights are markedly cleaner than from the raw iterate.
//!
//! The EMA lives on the inner (non-autodiff) backend as a second module with the same
//! parameter ids; the update matches parameters by id, not by position, so it stays correct
//! whatever order a module's fields are visited in.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Collects every float parameter, flattened, keyed by id.
struct Collect<B: Backend> {
    params: HashMap<ParamId, Tensor<B, 1>>,
}

impl<B: Backend> ModuleVisitor<B> for Collect<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        let n = value.shape().num_elements();
        self.params.insert(param.id, value.reshape([n]));
    }
}

/// `ema <- decay * ema + (1 - decay) * live`, parameter by parameter.
struct Blend<B: Backend> {
    live: HashMap<ParamId, Tensor<B, 1>>,
    decay: f32,
    missing: usize,
}

impl<B: Backend> ModuleMapper<B> for Blend<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, ema, mapper) = param.consume();
        let value = match self.live.remove(&id) {
            Some(live) => {
                let live: Tensor<B, D> = live.reshape(ema.shape());
                ema.mul_scalar(self.decay).add(live.mul_scalar(1.0 - self.decay))
            }
            None => {
                self.missing += 1;
                ema
            }
        };
        Param::from_mapped_value(id, value, mapper)
    }
}

/// Decay actually used after `step` optimiser steps: the configured decay, capped early on by
/// (1 + step) / (10 + step) so the average is not dominated by the random initial weights
/// during short runs (the warm-up diffusers' EMAModel uses).
pub fn effective_decay(decay: f64, step: u64) -> f32 {
    decay.min((1 + step) as f64 / (10 + step) as f64) as f32
}

/// Returns the updated EMA module, or an error count if `live` lacks some EMA parameter ids
/// (which would mean the two modules are not the same architecture).
pub fn update<B: Backend, M: Module<B>>(ema: M, live: &M, decay: f32) -> Result<M, usize> {
    let mut collect = Collect { params: HashMap::new() };
    live.visit(&mut collect);
    let mut blend = Blend { live: collect.params, decay, missing: 0 };
    let ema = ema.map(&mut blend);
    if blend.missing > 0 || !blend.live.is_empty() {
        return Err(blend.missing + blend.live.len());
    }
    Ok(ema)
}
