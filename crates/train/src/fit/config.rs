//! What a training run is: its settings (`FitConfig`), its saved progress (`RunState`), and how
//! command-line flags combine with a stored run on `--resume`.

use serde::{Deserialize, Serialize};

use edgediff_core::{BetaSchedule, ModelSchedule, PredictionType};

use crate::unet::UNetConfig;

use super::FitError;

/// Every setting that shapes the trained weights. Stored in each checkpoint's `state.json`, so a
/// resumed run continues with exactly the settings it started with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitConfig {
    /// `sprites` or an image folder.
    pub data: String,
    /// Total optimiser steps of the run.
    pub steps: u64,
    pub batch: usize,
    /// Peak learning rate (Adam), reached after `warmup` steps of linear ramp.
    pub lr: f64,
    pub warmup: u64,
    /// Global gradient-norm clip (as torch's `clip_grad_norm_`); 0 disables it.
    pub grad_clip: f64,
    /// EMA decay of the exported weights.
    pub ema: f64,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// diffusers names: `epsilon`, `v_prediction`, `sample`.
    pub prediction: String,
    /// diffusers names: `linear`, `scaled_linear`, `squaredcos_cap_v2`.
    pub schedule: String,
    pub timesteps: usize,
    pub beta_start: f32,
    pub beta_end: f32,
    /// Class-conditional runs (`model.num_classes` set): the probability that a training
    /// label is replaced by the null class, so the same network also learns the
    /// unconditional model that classifier-free guidance needs. 0 for unconditional runs
    /// (and for runs stored before this field existed).
    #[serde(default)]
    pub label_dropout: f64,
    /// Learning rate after the warm-up: `constant`, or `cosine` (half a cosine from `lr` down
    /// to 0 at `steps`; the fine-tune that sharpens a warm-started model). Runs stored before
    /// this field existed are `constant`.
    #[serde(default = "constant")]
    pub lr_decay: String,
    /// A warm start (`--init-from`): the fp32 ONNX export whose weights the run began from,
    /// and its sha256, so the run records what it continued. `None` = random init.
    #[serde(default)]
    pub init_from: Option<InitFrom>,
    pub model: UNetConfig,
}

fn constant() -> String {
    "constant".into()
}

/// Where a warm-started run's weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitFrom {
    pub path: String,
    pub sha256: String,
    /// The source model's own `edgediff.training_steps`.
    pub training_steps: u64,
}

/// Progress of a run, saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Version of this file's layout.
    pub format: u32,
    /// Optimiser steps completed (the next step to run).
    pub step: u64,
    pub config: FitConfig,
    /// Training loss of every completed step, index = step. JSON writes f32 in shortest
    /// round-trip form, so the log survives a save/load cycle bit for bit.
    pub losses: Vec<f32>,
    /// Wall-clock seconds spent training (all sessions).
    pub train_seconds: f64,
    /// The dataset's class names (sprite shapes, or sub-folder names), kept for conditional
    /// models and for the exported metadata.
    #[serde(default)]
    pub class_names: Vec<String>,
}

pub const STATE_FORMAT: u32 = 1;

/// Flags as given on the command line; `None` = not given.
#[derive(Debug, Clone, Default)]
pub struct FitOverrides {
    pub data: Option<String>,
    pub steps: Option<u64>,
    pub batch: Option<usize>,
    pub lr: Option<f64>,
    pub warmup: Option<u64>,
    pub grad_clip: Option<f64>,
    pub ema: Option<f64>,
    pub checkpoint_every: Option<u64>,
    pub seed: Option<u64>,
    pub prediction: Option<String>,
    pub schedule: Option<String>,
    pub timesteps: Option<usize>,
    pub image_size: Option<usize>,
    pub base_channels: Option<usize>,
    pub channel_mults: Option<Vec<usize>>,
    pub blocks_per_level: Option<usize>,
    pub attention: Option<Vec<usize>>,
    pub dropout: Option<f64>,
    /// Train class-conditional on the dataset's classes (`--conditional`).
    pub conditional: Option<bool>,
    pub label_dropout: Option<f64>,
    pub lr_decay: Option<String>,
    /// New runs only: start from this fp32 export's weights (see `crate::import`).
    pub init_from: Option<std::path::PathBuf>,
}

/// Label dropout of a conditional run when `--label-dropout` is not given.
pub const DEFAULT_LABEL_DROPOUT: f64 = 0.1;

impl FitConfig {
    /// A new run: defaults overridden by the given flags. `data` must be given.
    /// `class_names` are the dataset's classes; a conditional run (`--conditional`) gets one
    /// class per name, and a dataset without classes is then an error.
    pub fn from_overrides(o: &FitOverrides, class_names: &[String]) -> Result<FitConfig, FitError> {
        let data = o.data.clone().ok_or_else(|| FitError::Config("--data is required for a new run".into()))?;
        let mut model = UNetConfig::new();
        if let Some(v) = o.image_size {
            model.image_size = v;
        }
        if let Some(v) = o.base_channels {
            model.base_channels = v;
        }
        if let Some(v) = &o.channel_mults {
            model.channel_mults = v.clone();
        }
        if let Some(v) = o.blocks_per_level {
            model.blocks_per_level = v;
        }
        if let Some(v) = &o.attention {
            model.attention_resolutions = v.clone();
        }
        if let Some(v) = o.dropout {
            model.dropout = v;
        }
        let conditional = o.conditional.unwrap_or(false);
        if conditional {
            if class_names.is_empty() {
                return Err(FitError::Config(format!(
                    "--conditional: {data} has no classes (an image folder needs one sub-folder per class: {data}/<class>/*.png)"
                )));
            }
            model.num_classes = Some(class_names.len());
        } else if o.label_dropout.is_some() {
            return Err(FitError::Config("--label-dropout applies only to --conditional runs".into()));
        }
        let cfg = FitConfig {
            data,
            steps: o.steps.unwrap_or(20_000),
            batch: o.batch.unwrap_or(32),
            lr: o.lr.unwrap_or(2e-4),
            warmup: o.warmup.unwrap_or(500),
            grad_clip: o.grad_clip.unwrap_or(1.0),
            ema: o.ema.unwrap_or(0.999),
            checkpoint_every: o.checkpoint_every.unwrap_or(200),
            seed: o.seed.unwrap_or(0),
            prediction: o.prediction.clone().unwrap_or_else(|| "epsilon".into()),
            schedule: o.schedule.clone().unwrap_or_else(|| "linear".into()),
            timesteps: o.timesteps.unwrap_or(1000),
            beta_start: 1e-4,
            beta_end: 0.02,
            label_dropout: if conditional { o.label_dropout.unwrap_or(DEFAULT_LABEL_DROPOUT) } else { 0.0 },
            lr_decay: o.lr_decay.clone().unwrap_or_else(constant),
            // Filled in by `fit` once the file is read and checked.
            init_from: None,
            model,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Settings for `--resume`: the stored ones. `--steps` (to train longer) and
    /// `--checkpoint-every` may change; any other flag that contradicts the run is an error
    /// rather than silently ignored.
    pub fn resumed(stored: &FitConfig, o: &FitOverrides) -> Result<FitConfig, FitError> {
        let mut cfg = stored.clone();
        if let Some(s) = o.steps {
            cfg.steps = s;
        }
        if let Some(c) = o.checkpoint_every {
            cfg.checkpoint_every = c;
        }
        let m = &stored.model;
        let mut clash = Vec::new();
        let mut check = |flag: &str, given: Option<String>, run: String| {
            if let Some(g) = given {
                if g != run {
                    clash.push(format!("{flag} {g} (run has {run})"));
                }
            }
        };
        let list = |v: &Vec<usize>| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
        check("--data", o.data.clone(), stored.data.clone());
        check("--batch", o.batch.map(|v| v.to_string()), stored.batch.to_string());
        check("--lr", o.lr.map(|v| v.to_string()), stored.lr.to_string());
        check("--warmup", o.warmup.map(|v| v.to_string()), stored.warmup.to_string());
        check("--grad-clip", o.grad_clip.map(|v| v.to_string()), stored.grad_clip.to_string());
        check("--ema", o.ema.map(|v| v.to_string()), stored.ema.to_string());
        check("--seed", o.seed.map(|v| v.to_string()), stored.seed.to_string());
        check("--prediction", o.prediction.clone(), stored.prediction.clone());
        check("--schedule", o.schedule.clone(), stored.schedule.clone());
        check("--timesteps", o.timesteps.map(|v| v.to_string()), stored.timesteps.to_string());
        check("--image-size", o.image_size.map(|v| v.to_string()), m.image_size.to_string());
        check("--base-channels", o.base_channels.map(|v| v.to_string()), m.base_channels.to_string());
        check("--channel-mults", o.channel_mults.as_ref().map(list), list(&m.channel_mults));
        check("--blocks-per-level", o.blocks_per_level.map(|v| v.to_string()), m.blocks_per_level.to_string());
        check("--attention", o.attention.as_ref().map(list), list(&m.attention_resolutions));
        check("--dropout", o.dropout.map(|v| v.to_string()), m.dropout.to_string());
        check("--conditional", o.conditional.map(|v| v.to_string()), m.num_classes.is_some().to_string());
        check("--label-dropout", o.label_dropout.map(|v| v.to_string()), stored.label_dropout.to_string());
        check("--lr-decay", o.lr_decay.clone(), stored.lr_decay.clone());
        if o.init_from.is_some() {
            clash.push("--init-from (a resumed run continues from its checkpoint)".into());
        }
        if !clash.is_empty() {
            return Err(FitError::Config(format!(
                "--resume continues the run's own settings; these flags differ: {}",
                clash.join(", ")
            )));
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn prediction_type(&self) -> Result<PredictionType, FitError> {
        self.prediction.parse().map_err(|e: edgediff_core::CoreError| FitError::Config(format!("--prediction: {e}")))
    }

    pub fn beta_schedule(&self) -> Result<BetaSchedule, FitError> {
        self.schedule.parse().map_err(|e: edgediff_core::CoreError| FitError::Config(format!("--schedule: {e}")))
    }

    /// The diffusion process this run trains for, as its export describes it (x0 clipped to
    /// ±1, the data range).
    pub fn model_schedule(&self) -> Result<ModelSchedule, FitError> {
        Ok(ModelSchedule {
            num_train_timesteps: self.timesteps,
            beta_schedule: self.beta_schedule()?,
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            dpm_clip_sample: true,
            prediction_type: self.prediction_type()?,
            clip_sample: Some(1.0),
        })
    }

    /// Every value is checked here, once, so the training loop can rely on it.
    pub fn validate(&self) -> Result<(), FitError> {
        let bad = |msg: String| Err(FitError::Config(msg));
        self.prediction_type()?;
        self.beta_schedule()?;
        if self.steps == 0 {
            return bad("--steps must be at least 1".into());
        }
        if self.batch == 0 {
            return bad("--batch must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr {} must be a positive number", self.lr));
        }
        if !(self.grad_clip.is_finite() && self.grad_clip >= 0.0) {
            return bad(format!("--grad-clip {} must be >= 0 (0 = off)", self.grad_clip));
        }
        if !(0.0..1.0).contains(&self.ema) {
            return bad(format!("--ema {} must be in [0, 1)", self.ema));
        }
        if self.checkpoint_every == 0 {
            return bad("--checkpoint-every must be at least 1".into());
        }
        if self.timesteps < 2 {
            return bad(format!("--timesteps {} must be at least 2", self.timesteps));
        }
        if !(0.0..=1.0).contains(&self.label_dropout) {
            return bad(format!("--label-dropout {} must be in [0, 1]", self.label_dropout));
        }
        if !matches!(self.lr_decay.as_str(), "constant" | "cosine") {
            return bad(format!("--lr-decay {:?} must be constant or cosine", self.lr_decay));
        }
        if self.model.num_classes.is_none() && self.label_dropout != 0.0 {
            return bad("--label-dropout applies only to --conditional runs".into());
        }
        if !(0.0..1.0).contains(&self.model.dropout) {
            return bad(format!("--dropout {} must be in [0, 1)", self.model.dropout));
        }
        self.model.validate().map_err(|e| FitError::Config(format!("model: {e}")))?;
        Ok(())
    }

    /// Learning rate at `step` (0-based): linear warm-up from lr/warmup to lr, then constant
    /// or (`lr_decay` cosine) half a cosine that would reach 0 at `steps`.
    pub fn lr_at(&self, step: u64) -> f64 {
        let warm = if self.warmup == 0 { 1.0 } else { ((step + 1) as f64 / self.warmup as f64).min(1.0) };
        let decay = if self.lr_decay == "cosine" && step >= self.warmup {
            let span = self.steps.saturating_sub(self.warmup).max(1) as f64;
            let progress = ((step - self.warmup) as f64 / span).min(1.0);
            0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        } else {
            1.0
        };
        self.lr * warm * decay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(decay: &str) -> FitConfig {
        let o = FitOverrides {
            data: Some("sprites".into()),
            steps: Some(110),
            lr: Some(1e-3),
            warmup: Some(10),
            lr_decay: Some(decay.into()),
            ..Default::default()
        };
        FitConfig::from_overrides(&o, &[]).unwrap()
    }

    #[test]
    fn cosine_decay_starts_at_the_peak_and_ends_near_zero() {
        let (c, k) = (config("constant"), config("cosine"));
        for step in 0..10 {
            assert_eq!(c.lr_at(step), k.lr_at(step), "warm-up is the same");
        }
        assert_eq!(k.lr_at(10), 1e-3);
        assert!((k.lr_at(60) - 0.5e-3).abs() < 1e-12, "half way: {}", k.lr_at(60));
        let last = k.lr_at(109);
        assert!(last > 0.0 && last < 1e-6, "{last}");
        assert!((10..109).all(|s| k.lr_at(s + 1) < k.lr_at(s)), "decreasing after warm-up");
        assert_eq!(c.lr_at(109), 1e-3);
    }

    #[test]
    fn an_unknown_decay_is_refused() {
        let o = FitOverrides { data: Some("sprites".into()), lr_decay: Some("step".into()), ..Default::default() };
        let err = FitConfig::from_overrides(&o, &[]).unwrap_err().to_string();
        assert!(err.contains("--lr-decay"), "{err}");
    }
}
