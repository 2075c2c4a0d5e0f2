//! The sampling flags: solver, steps, timestep spacing, eta. Each is optional: a flag the user
//! does not give takes its value from the defaults the caller passes (the sampler's own, or a
//! model's recommended ones), so a flag overrides a default and never the other way round.

use clap::Args;
use edgediff_core::{ModelSchedule, SamplerSettings, SchedulerKind, Spacing};

use crate::{parse, UsageError};

/// `--steps --eta --scheduler --spacing --steps-offset --set-alpha-to-one`.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct SchedulerArgs {
    /// Number of denoising steps [default: 50]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: Option<u32>,
    /// DDIM eta: 0 = deterministic DDIM, 1 = DDPM-like noise [default: 0]
    #[arg(long, value_parser = parse::eta)]
    pub eta: Option<f32>,
    /// Sampler: ddim, ddpm or dpmpp2m (DPM-Solver++ 2M, no noise) [default: ddim]
    #[arg(long, value_parser = parse::from_str::<SchedulerKind>)]
    pub scheduler: Option<SchedulerKind>,
    /// Timestep spacing: leading, trailing or linspace (as diffusers) [default: leading]
    #[arg(long, value_parser = parse::from_str::<Spacing>)]
    pub spacing: Option<Spacing>,
    /// Offset added to leading timesteps (diffusers' steps_offset) [default: 0]
    #[arg(long)]
    pub steps_offset: Option<usize>,
    /// Final alpha_bar_prev = 1 (diffusers' set_alpha_to_one); false uses alpha_bar[0] [default: true]
    #[arg(long, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub set_alpha_to_one: Option<bool>,
}

impl SchedulerArgs {
    /// The settings these flags ask for, each flag not given taken from `defaults`.
    pub fn over(&self, defaults: &SamplerSettings) -> SamplerSettings {
        SamplerSettings {
            kind: self.scheduler.unwrap_or(defaults.kind),
            steps: self.steps.map_or(defaults.steps, |s| s as usize),
            spacing: self.spacing.unwrap_or(defaults.spacing),
            steps_offset: self.steps_offset.unwrap_or(defaults.steps_offset),
            eta: self.eta.unwrap_or(defaults.eta),
            set_alpha_to_one: self.set_alpha_to_one.unwrap_or(defaults.set_alpha_to_one),
        }
    }

    /// [`SchedulerArgs::over`] for a model: more steps than it has training timesteps is a
    /// usage error that says how many are possible.
    pub fn for_model(&self, model: &ModelSchedule, defaults: &SamplerSettings) -> Result<SamplerSettings, UsageError> {
        let settings = self.over(defaults);
        let t = model.num_train_timesteps;
        if settings.steps > t {
            return Err(UsageError(format!(
                "--steps {}: the model was trained with {t} timesteps, so at most {t} steps are possible",
                settings.steps
            )));
        }
        Ok(settings)
    }

    /// The flags that reproduce `settings` exactly, every one spelled out.
    pub fn command_line(settings: &SamplerSettings) -> Vec<String> {
        [
            ("--steps", settings.steps.to_string()),
            ("--scheduler", settings.kind.to_string()),
            ("--eta", settings.eta.to_string()),
            ("--spacing", settings.spacing.to_string()),
            ("--steps-offset", settings.steps_offset.to_string()),
            ("--set-alpha-to-one", settings.set_alpha_to_one.to_string()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sampling: SchedulerArgs,
    }

    fn parse(args: &[&str]) -> Result<SchedulerArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied())).map(|c| c.sampling)
    }

    #[test]
    fn flags_override_defaults_and_round_trip() {
        let defaults = SamplerSettings { spacing: Spacing::Trailing, ..SamplerSettings::ddim(20) };
        assert_eq!(parse(&[]).unwrap().over(&defaults), defaults);
        let args = parse(&["--steps", "7", "--scheduler", "dpmpp2m", "--set-alpha-to-one", "false"]).unwrap();
        let got = args.over(&defaults);
        let want = SamplerSettings {
            kind: SchedulerKind::DpmSolverPP2M,
            steps: 7,
            set_alpha_to_one: false,
            ..defaults.clone()
        };
        assert_eq!(got, want);
        let line = SchedulerArgs::command_line(&got);
        let again = parse(&line.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert_eq!(again.over(&SamplerSettings::default()), got);
    }

    #[test]
    fn bad_values_and_too_many_steps_are_refused() {
        for bad in [&["--steps", "0"][..], &["--eta", "2"], &["--scheduler", "euler"], &["--spacing", "x"]] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let model = ModelSchedule { num_train_timesteps: 10, ..ModelSchedule::default() };
        let err = parse(&["--steps", "11"]).unwrap().for_model(&model, &SamplerSettings::default()).unwrap_err();
        assert!(err.0.contains("at most 10 steps"), "{}", err.0);
    }
}
