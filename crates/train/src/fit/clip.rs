//! Global gradient-norm clipping, as torch's `clip_grad_norm_`: all gradients are scaled by
//! one factor so their joint L2 norm is at most `max_norm`. (burn's own `GradientClipping::Norm`
//! clips each tensor separately, which changes the update direction; the global form is what
//! DDPM training recipes use.)

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t.add(s),
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f32,
    _b: core::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The joint L2 norm of all gradients (before clipping). With `max_norm > 0` and a larger norm,
/// scales every gradient by `max_norm / (norm + 1e-6)`. Summation follows the module's fixed
/// visiting order, so the result is deterministic.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f32 {
    let mut acc = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut acc);
    let norm = acc.total.map(|t| t.into_scalar().elem::<f32>().sqrt()).unwrap_or(0.0);
    if max_norm > 0.0 && (norm as f64) > max_norm {
        let factor = (max_norm / (norm as f64 + 1e-6)) as f32;
        module.visit(&mut Scale::<B> { grads, factor, _b: core::marker::PhantomData });
    }
    norm
}
