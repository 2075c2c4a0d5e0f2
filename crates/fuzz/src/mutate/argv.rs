//! `sampler` command lines from its grammar: a subcommand or none, known flags with values at
//! their edges (huge, negative, NaN, empty, devices, symlinks, folders, one path for two
//! outputs), and mutations that insert, drop, repeat or join them. Steps and batch stay small
//! mostly, so a case takes a fraction of a second.

use rand::seq::IndexedRandom;
use rand::Rng as _;

use super::onnx::{meta_value, META_KEYS};
use crate::Rng;

/// What a flag's value is.
#[derive(Clone, Copy)]
enum Value {
    /// The flag alone.
    Switch,
    /// One of these.
    Of(&'static [&'static str]),
    /// An edge number ([`super::EDGE_NUMBERS`]).
    Number,
    /// A `--meta KEY=VALUE` pair.
    Meta,
}

const STEPS: &[&str] = &["1", "1", "2", "2", "3", "0", "-1", "1001", "4294967296", "", " 2", "2.5"];
const INPUTS: &[&str] = &[
    "m.onnx",
    "flat",
    "noise.npy",
    "noise8.npy",
    "sched.json",
    "unet.json",
    "missing.onnx",
    "dir",
    "/dev/null",
    "/dev/zero",
    "link.png",
    "out.png",
    "",
    ".",
];
const OUTPUTS: &[&str] = &[
    "out.png",
    "out.png",
    "raw.npy",
    "x.npy",
    "r.json",
    "dir",
    "dir/a.png",
    "link.png",
    "m.onnx",
    "/dev/null",
    "/dev/full",
    "",
    ".",
    "missing/a.png",
    "out",
];

const FLAGS: &[(&str, Value)] = &[
    ("--steps", Value::Of(STEPS)),
    ("--eta", Value::Number),
    ("--scheduler", Value::Of(&["ddim", "ddpm", "dpmpp2m", "DDIM", "euler", ""])),
    ("--spacing", Value::Of(&["leading", "trailing", "linspace", "x"])),
    ("--steps-offset", Value::Number),
    ("--set-alpha-to-one", Value::Of(&["true", "false", "1", "yes", ""])),
    ("--seed", Value::Number),
    ("--batch", Value::Of(&["1", "2", "3", "0", "64", "4097", "-1"])),
    ("--class", Value::Of(&["a", "b", "0", "3", "-1", "star", "", "null"])),
    ("--guidance", Value::Number),
    ("--separate", Value::Switch),
    ("--threads", Value::Of(&["1", "2", "0", "256", "257"])),
    (
        "--memory-budget",
        Value::Of(&["1", "64MiB", "0", "1KiB", "1e99", "18446744073709551615", "-1KiB", "10GB", "1.5MiB", "MiB"]),
    ),
    ("--init-noise", Value::Of(INPUTS)),
    ("--save-init-noise", Value::Of(OUTPUTS)),
    ("--save-raw", Value::Of(OUTPUTS)),
    ("--report-json", Value::Of(OUTPUTS)),
    ("--upscale", Value::Of(&["1", "2", "64", "65", "0"])),
    ("--quiet", Value::Switch),
    ("--verbose", Value::Switch),
    ("--model", Value::Of(INPUTS)),
    ("--scheduler-config", Value::Of(INPUTS)),
    ("--unet-config", Value::Of(INPUTS)),
    ("--output", Value::Of(&["prediction", "y", "", "sample"])),
    ("--meta", Value::Meta),
    ("--json", Value::Switch),
    ("--help", Value::Switch),
    ("--version", Value::Switch),
];

/// A fresh command line.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut words: Vec<String> = Vec::new();
    let sub = ["", "", "", "", "info", "schedule", "import", "help"].choose(rng).copied().unwrap_or("");
    if !sub.is_empty() {
        words.push(sub.into());
    }
    for _ in 0..rng.random_range(0..6) {
        words.extend(flag(rng));
    }
    if !words.iter().any(|w| w.starts_with("--steps")) && rng.random_bool(0.9) {
        words.extend(["--steps".to_string(), STEPS[rng.random_range(0..5)].to_string()]);
    }
    let positionals = if sub == "import" { 2 } else { 1 };
    for _ in 0..positionals {
        if rng.random_bool(0.9) {
            let at = rng.random_range(0..=words.len());
            let path = if sub == "import" && rng.random_bool(0.5) { INPUTS } else { OUTPUTS };
            words.insert(at, path.choose(rng).copied().unwrap_or("out.png").into());
        }
    }
    words.join("\n").into_bytes()
}

/// A known flag and its value, as one word (`--flag=value`) or two.
fn flag(rng: &mut Rng) -> Vec<String> {
    let (name, kind) = FLAGS.choose(rng).copied().unwrap_or(("--quiet", Value::Switch));
    let value = match kind {
        Value::Switch => return vec![name.to_string()],
        Value::Of(values) => values.choose(rng).copied().unwrap_or("").to_string(),
        Value::Number => super::edge_number(rng).to_string(),
        Value::Meta => {
            let key = META_KEYS.choose(rng).copied().unwrap_or("edgediff.format");
            let key = if rng.random_bool(0.5) { key.trim_start_matches("edgediff.") } else { key };
            format!("{key}={}", meta_value(rng))
        }
    };
    if rng.random_bool(0.2) {
        vec![format!("{name}={value}")]
    } else {
        vec![name.to_string(), value]
    }
}

/// One change to an existing command line: a flag inserted, a word dropped, repeated, moved or
/// swapped for a flag's value.
pub fn mutate(rng: &mut Rng, bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut words: Vec<String> = text.split('\n').map(str::to_string).collect();
    let i = rng.random_range(0..words.len());
    match rng.random_range(0..5) {
        0 => drop(words.remove(i)),
        1 => words.insert(i, words[i].clone()),
        2 => {
            let w = words.remove(i);
            let to = rng.random_range(0..=words.len());
            words.insert(to, w);
        }
        3 => words[i] = flag(rng).pop().unwrap_or_default(),
        _ => {
            let new = flag(rng);
            words.splice(i..i, new);
        }
    }
    Some(words.join("\n").into_bytes())
}
