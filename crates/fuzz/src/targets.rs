//! The fuzz targets: one per reader of untrusted input, each `fn(&Context, &[u8]) -> Stage`.

pub mod cli;
mod cli_check;
pub mod meta;
pub mod model;
pub mod npy;
pub mod scheduler_config;

use crate::{mutate, Context, FuzzError, Rng};

/// How far an input got through a target, e.g. `refused` or `evaluated`: the engine counts
/// them, so a run shows whether its cases reach the deep code at all.
pub type Stage = &'static str;

/// One fuzz target and how the engine feeds it.
pub struct Target {
    pub name: &'static str,
    pub about: &'static str,
    /// Runs one input. Returns on every input; a panic is a finding.
    pub run: fn(&Context, &[u8]) -> Stage,
    /// A structure-aware mutation of an input of this target's format (`None`: the input does
    /// not parse as that format, so only byte-level mutations apply).
    pub mutate: fn(&mut Rng, &[u8]) -> Option<Vec<u8>>,
    /// A fresh structured case drawn without a corpus entry, where the format has a grammar
    /// worth generating from (the CLI's flags).
    pub generate: Option<fn(&mut Rng) -> Vec<u8>>,
    /// The stage of an input that went all the way through: such inputs join the pool the
    /// engine mutates next.
    pub deepest: Stage,
    /// Mutated inputs are cut to this many bytes.
    pub max_len: usize,
    /// Runs the `sampler` binary (slow: a process per case).
    pub subprocess: bool,
}

impl Target {
    /// Fails early, before any case, when the target cannot run here.
    pub fn check(&self, ctx: &Context) -> Result<(), FuzzError> {
        if self.subprocess {
            ctx.sampler()?;
        }
        Ok(())
    }
}

/// Every target, in the order a full run visits them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "model",
        about: "ONNX bytes: inspect, load, plan for batch 1, one evaluation, two sampling steps",
        run: model::run,
        mutate: mutate::onnx::mutate,
        generate: None,
        deepest: model::SAMPLED,
        max_len: 64 << 10,
        subprocess: false,
    },
    Target {
        name: "meta",
        about: "key=value lines: ModelMeta::from_props, its round trip, every scheduler it allows",
        run: meta::run,
        mutate: mutate::text::mutate_props,
        generate: None,
        deepest: meta::STEPPED,
        max_len: 16 << 10,
        subprocess: false,
    },
    Target {
        name: "npy",
        about: ".npy bytes: edgediff_io::npy::read_f32 from a file, and its round trip",
        run: npy::run,
        mutate: mutate::text::mutate_npy,
        generate: None,
        deepest: npy::ROUND_TRIPPED,
        max_len: 16 << 10,
        subprocess: false,
    },
    Target {
        name: "scheduler_config",
        about:
            "JSON: diffusers' scheduler_config.json, config.json and model_index.json readers, merged into ModelMeta",
        run: scheduler_config::run,
        mutate: mutate::json::mutate,
        generate: None,
        deepest: scheduler_config::SCHEDULED,
        max_len: 16 << 10,
        subprocess: false,
    },
    Target {
        name: "cli",
        about: "newline-separated words: the sampler binary's arguments, run in a scratch folder",
        run: cli::run,
        mutate: mutate::argv::mutate,
        generate: Some(mutate::argv::generate),
        deepest: cli::SUCCEEDED,
        max_len: 4 << 10,
        subprocess: true,
    },
];

/// The target called `name`.
pub fn find_target(name: &str) -> Result<&'static Target, FuzzError> {
    TARGETS.iter().find(|t| t.name == name).ok_or_else(|| {
        FuzzError::UnknownTarget(name.to_string(), TARGETS.iter().map(|t| t.name).collect::<Vec<_>>().join(", "))
    })
}
