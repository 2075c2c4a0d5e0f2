//! diffusers' configuration files, read as edgediff model metadata (`edgediff.*` keys, see
//! `edgediff_core::meta`): `scheduler_config.json` gives the noise schedule, the prediction type,
//! clipping and the recommended timestep spacing; the U-Net's `config.json` gives the image size,
//! the channels and the classes.
//!
//! One file over 400 lines: the key tables and their readers are one idea, and about a fifth of
//! it is the tests against diffusers' own configurations.
//!
//! Every key a file holds is either honoured, accepted because it cannot change a result the
//! sampler computes (another solver's own settings, thresholding's parameters while thresholding
//! is off), or refused with an error naming the key: a setting is never silently ignored. Keys
//! that start with `_` are diffusers' bookkeeping.

use std::collections::BTreeMap;
use std::path::Path;

use edgediff_core::meta;
use serde_json::{Map, Value};

use super::SourceError;

/// The schedulers whose configuration keys are understood. The sampler's `--scheduler` picks the
/// solver; the file gives the schedule every solver shares.
const SCHEDULERS: &[&str] =
    &["DDIMScheduler", "DDPMScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler", "EulerDiscreteScheduler"];

/// Metadata from a `scheduler_config.json`.
pub fn scheduler_props(file: &Path, text: &str) -> Result<BTreeMap<String, String>, SourceError> {
    let config = parse_object(file, text)?;
    let class = match config.get("_class_name") {
        None => "DDIMScheduler",
        Some(Value::String(c)) if SCHEDULERS.contains(&c.as_str()) => c.as_str(),
        Some(other) => {
            return Err(key_error(file, "_class_name", format!("{other}: expected one of {}", SCHEDULERS.join(", "))))
        }
    };
    let reader = Reader { file, config: &config };
    for (key, value) in &config {
        if !key.starts_with('_') {
            reader.check_key(class, key, value)?;
        }
    }
    reader.schedule_props(class)
}

/// Metadata from a U-Net's `config.json` (`UNet2DModel`): image size, channels, classes.
pub fn unet_props(file: &Path, text: &str) -> Result<BTreeMap<String, String>, SourceError> {
    let config = parse_object(file, text)?;
    let reader = Reader { file, config: &config };
    match config.get("_class_name").and_then(Value::as_str) {
        None | Some("UNet2DModel") => {}
        Some("UNet2DConditionModel") => {
            return Err(key_error(
                file,
                "_class_name",
                "UNet2DConditionModel is text-conditioned (it needs encoder_hidden_states from a text encoder): \
                 not supported, only pixel-space UNet2DModel"
                    .into(),
            ))
        }
        Some(other) => {
            return Err(key_error(file, "_class_name", format!("{other}: expected UNet2DModel")));
        }
    }
    let mut props = BTreeMap::new();
    let size = match config.get("sample_size") {
        Some(Value::Array(hw)) if hw.len() == 2 && hw[0] == hw[1] => hw[0].clone(),
        Some(Value::Array(hw)) => {
            return Err(key_error(file, "sample_size", format!("{hw:?}: only square images are supported")))
        }
        Some(v) => v.clone(),
        None => return Err(key_error(file, "sample_size", "missing: expected the image size".into())),
    };
    let size = reader.count_value("sample_size", &size, 1, 1 << 14)?;
    props.insert(meta::IMAGE_SIZE.into(), size.to_string());
    let channels = reader.count("in_channels", 1, 1 << 14)?.unwrap_or(3);
    if !(channels == 1 || channels == 3) {
        return Err(key_error(
            file,
            "in_channels",
            format!("{channels}: expected 1 or 3 (pixel images; a 4-channel latent model needs a VAE decoder, not supported)"),
        ));
    }
    let out_channels = reader.count("out_channels", 1, 1 << 14)?.unwrap_or(channels);
    if out_channels != channels {
        return Err(key_error(
            file,
            "out_channels",
            format!("{out_channels}: expected {channels} like in_channels (a learned-variance model predicts more channels: not supported)"),
        ));
    }
    props.insert(meta::CHANNELS.into(), channels.to_string());
    match config.get("class_embed_type") {
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(key_error(
                file,
                "class_embed_type",
                format!("{other}: only null (an embedding table of num_class_embeds classes) is supported"),
            ))
        }
    }
    if let Some(k) = reader.count("num_class_embeds", 1, 1 << 16)? {
        let names: Vec<String> = (0..k).map(|i| i.to_string()).collect();
        props.insert(meta::CLASS_NAMES.into(), names.join(","));
        props.insert(meta::NULL_CLASS.into(), meta::NO_NULL_CLASS.into());
    }
    Ok(props)
}

/// Parses a JSON object, accepting the non-finite numbers Python's `json` writes
/// (`-Infinity`, `Infinity`, `NaN`) as strings.
fn parse_object(file: &Path, text: &str) -> Result<Map<String, Value>, SourceError> {
    let value: Value = serde_json::from_str(&quote_non_finite(text))
        .map_err(|e| SourceError::File { path: file.to_path_buf(), message: format!("not valid JSON: {e}") })?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(SourceError::File { path: file.to_path_buf(), message: "expected a JSON object".into() }),
    }
}

/// `text` with every bare `NaN`, `Infinity` and `-Infinity` outside strings quoted.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_string, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if !in_string {
            if let Some(token) = ["-Infinity", "Infinity", "NaN"].into_iter().find(|t| rest.starts_with(t)) {
                out.push('"');
                out.push_str(token);
                out.push('"');
                rest = &rest[token.len()..];
                continue;
            }
        }
        match c {
            '"' if !escaped => in_string = !in_string,
            _ => {}
        }
        escaped = in_string && c == '\\' && !escaped;
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn key_error(file: &Path, key: &str, message: String) -> SourceError {
    SourceError::Key { path: file.to_path_buf(), key: key.to_string(), message }
}

/// Typed access to one config file's keys, each error naming the file and the key.
struct Reader<'a> {
    file: &'a Path,
    config: &'a Map<String, Value>,
}

/// What a scheduler key may hold.
enum Accepts {
    /// The sampler honours it (read by [`Reader::schedule_props`]).
    Honoured,
    /// Only this value (the behaviour the sampler's solvers implement).
    Only(Value),
    /// Anything: it configures a solver the sampler never runs, or a feature that is off.
    Any,
}

impl Reader<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.config.get(key).filter(|v| !v.is_null())
    }

    fn error(&self, key: &str, message: String) -> SourceError {
        key_error(self.file, key, message)
    }

    /// An integer in `lo..=hi`, if present.
    fn count(&self, key: &str, lo: usize, hi: usize) -> Result<Option<usize>, SourceError> {
        self.get(key).map(|v| self.count_value(key, v, lo, hi)).transpose()
    }

    fn count_value(&self, key: &str, v: &Value, lo: usize, hi: usize) -> Result<usize, SourceError> {
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| self.error(key, format!("{v}: expected an integer in {lo}..={hi}")))
    }

    fn number(&self, key: &str) -> Result<Option<f64>, SourceError> {
        self.get(key)
            .map(|v| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| self.error(key, format!("{v}: expected a finite number")))
            })
            .transpose()
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, SourceError> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.error(key, format!("{v}: expected true or false"))))
            .transpose()
    }

    fn text(&self, key: &str) -> Result<Option<&str>, SourceError> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.error(key, format!("{v}: expected a string")))).transpose()
    }

    /// Refuses a key the sampler cannot honour with the value it has.
    fn check_key(&self, class: &str, key: &str, value: &Value) -> Result<(), SourceError> {
        let accepts = accepts(class, key).ok_or_else(|| {
            self.error(key, format!("not a {class} setting edgediff knows; remove it if it is not needed"))
        })?;
        match accepts {
            Accepts::Honoured | Accepts::Any => Ok(()),
            Accepts::Only(want) if same(value, &want) || value.is_null() && want.is_null() => Ok(()),
            Accepts::Only(want) => Err(self.error(
                key,
                format!("{value}: edgediff's solvers (ddim, ddpm, dpmpp2m) implement only {want}, so this model cannot be sampled as its config asks"),
            )),
        }
    }

    /// The honoured keys as metadata, with the class's defaults for absent ones.
    fn schedule_props(&self, class: &str) -> Result<BTreeMap<String, String>, SourceError> {
        let mut props = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            props.insert(k.to_string(), v);
        };
        put(meta::FORMAT, meta::FORMAT_VERSION.into());
        put(
            meta::NUM_TRAIN_TIMESTEPS,
            self.count("num_train_timesteps", 2, meta::MAX_TRAIN_TIMESTEPS)?.unwrap_or(1000).to_string(),
        );
        put(meta::BETA_SCHEDULE, self.text("beta_schedule")?.unwrap_or("linear").to_string());
        put(meta::BETA_START, f32_text(self.number("beta_start")?.unwrap_or(1e-4)));
        put(meta::BETA_END, f32_text(self.number("beta_end")?.unwrap_or(0.02)));
        if let Some(betas) = self.get("trained_betas") {
            put(meta::TRAINED_BETAS, self.trained_betas(betas)?);
        }
        put(meta::PREDICTION_TYPE, self.text("prediction_type")?.unwrap_or("epsilon").to_string());
        // DDIM's and DDPM's default is to clip x0 to ±1; a file of another class has no such key,
        // and DDIM or DDPM made from it (diffusers' `from_config`) clips with that default.
        // DPM-Solver++ never clips.
        let clip = match self.boolean("clip_sample")?.unwrap_or(true) {
            true => self.number("clip_sample_range")?.unwrap_or(1.0),
            false => 0.0,
        };
        if clip < 0.0 || (clip == 0.0 && self.boolean("clip_sample")? != Some(false)) {
            return Err(self.error("clip_sample_range", format!("{clip}: expected a number > 0")));
        }
        put(meta::CLIP_SAMPLE, f32_text(clip));
        put(meta::DPM_CLIP_SAMPLE, "false".into());
        put(meta::RESCALE_BETAS_ZERO_SNR, self.boolean("rescale_betas_zero_snr")?.unwrap_or(false).to_string());
        let spacing = match class {
            "DPMSolverMultistepScheduler" | "EulerDiscreteScheduler" => "linspace",
            _ => "leading",
        };
        put(meta::TIMESTEP_SPACING, self.text("timestep_spacing")?.unwrap_or(spacing).to_string());
        put(meta::STEPS_OFFSET, self.count("steps_offset", 0, meta::MAX_TRAIN_TIMESTEPS)?.unwrap_or(0).to_string());
        if let Some(one) = self.boolean("set_alpha_to_one")? {
            put(meta::SET_ALPHA_TO_ONE, one.to_string());
        }
        Ok(props)
    }

    fn trained_betas(&self, betas: &Value) -> Result<String, SourceError> {
        let bad = || self.error("trained_betas", "expected a list of numbers in (0, 1)".into());
        let list = betas.as_array().ok_or_else(bad)?;
        let values: Option<Vec<String>> =
            list.iter().map(|b| b.as_f64().filter(|b| *b > 0.0 && *b < 1.0).map(f32_text)).collect();
        Ok(values.ok_or_else(bad)?.join(","))
    }
}

/// Whether two JSON values are the same setting (numbers compared as numbers, `-Infinity` as
/// the string the parser made of it).
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The shortest decimal that reads back as the same f32 (what the sampler's metadata stores).
fn f32_text(x: f64) -> String {
    (x as f32).to_string()
}

/// What the sampler does with `key` of a `class` config; `None` for a key it does not know.
fn accepts(class: &str, key: &str) -> Option<Accepts> {
    use serde_json::json;
    let dpm = class == "DPMSolverMultistepScheduler";
    Some(match key {
        "num_train_timesteps"
        | "beta_start"
        | "beta_end"
        | "beta_schedule"
        | "trained_betas"
        | "prediction_type"
        | "clip_sample"
        | "clip_sample_range"
        | "set_alpha_to_one"
        | "steps_offset"
        | "timestep_spacing"
        | "rescale_betas_zero_snr" => Accepts::Honoured,
        "thresholding" => Accepts::Only(json!(false)),
        // Only read by thresholding, which must be off.
        "dynamic_thresholding_ratio" | "sample_max_value" => Accepts::Any,
        "variance_type" if class == "DDPMScheduler" => Accepts::Only(json!("fixed_small")),
        "variance_type" => Accepts::Only(Value::Null),
        // Settings shared by the sigma-based solvers: diffusers carries them into DPM-Solver++.
        "use_karras_sigmas" | "use_exponential_sigmas" | "use_beta_sigmas" => Accepts::Only(json!(false)),
        "final_sigmas_type" => Accepts::Only(json!("zero")),
        "solver_order" if dpm => Accepts::Only(json!(2)),
        "algorithm_type" if dpm => Accepts::Only(json!("dpmsolver++")),
        "solver_type" if dpm => Accepts::Only(json!("midpoint")),
        "lower_order_final" if dpm => Accepts::Only(json!(true)),
        "euler_at_final" | "use_lu_lambdas" | "use_flow_sigmas" | "use_dynamic_shifting" if dpm => {
            Accepts::Only(json!(false))
        }
        "lambda_min_clipped" if dpm => Accepts::Only(json!("-Infinity")),
        // Only read with flow sigmas or dynamic shifting, which must be off.
        "flow_shift" | "time_shift_type" if dpm => Accepts::Any,
        // PNDM's and Euler's own solvers: the sampler never runs them.
        "skip_prk_steps" if class == "PNDMScheduler" => Accepts::Any,
        "interpolation_type" | "sigma_min" | "sigma_max" | "timestep_type" if class == "EulerDiscreteScheduler" => {
            Accepts::Any
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(text: &str) -> Result<BTreeMap<String, String>, SourceError> {
        scheduler_props(Path::new("scheduler_config.json"), text)
    }

    #[test]
    fn a_ddim_config_becomes_metadata_with_its_class_defaults() {
        let p = sched(r#"{"_class_name": "DDIMScheduler", "_diffusers_version": "0.42.1", "beta_schedule": "scaled_linear",
            "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1,
            "prediction_type": "v_prediction", "thresholding": false, "trained_betas": null}"#)
        .unwrap();
        assert_eq!(p[meta::BETA_SCHEDULE], "scaled_linear");
        assert_eq!((p[meta::BETA_START].as_str(), p[meta::BETA_END].as_str()), ("0.00085", "0.012"));
        assert_eq!((p[meta::CLIP_SAMPLE].as_str(), p[meta::PREDICTION_TYPE].as_str()), ("0", "v_prediction"));
        assert_eq!((p[meta::STEPS_OFFSET].as_str(), p[meta::SET_ALPHA_TO_ONE].as_str()), ("1", "false"));
        assert_eq!((p[meta::TIMESTEP_SPACING].as_str(), p[meta::NUM_TRAIN_TIMESTEPS].as_str()), ("leading", "1000"));
        assert!(!p.contains_key(meta::TRAINED_BETAS));
    }

    #[test]
    fn a_dpm_config_with_python_infinity_parses_and_keeps_its_spacing() {
        let p = sched(
            r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
            "solver_order": 2, "algorithm_type": "dpmsolver++", "variance_type": null, "flow_shift": 1.0}"#,
        )
        .unwrap();
        assert_eq!(p[meta::TIMESTEP_SPACING], "linspace");
        assert_eq!(p[meta::CLIP_SAMPLE], "1", "DDIM made from this config clips, as diffusers' from_config does");
    }

    #[test]
    fn settings_it_cannot_honour_are_errors_naming_the_key() {
        for (text, key) in [
            (r#"{"thresholding": true}"#, "thresholding"),
            (r#"{"_class_name": "DDPMScheduler", "variance_type": "learned_range"}"#, "variance_type"),
            (r#"{"_class_name": "DPMSolverMultistepScheduler", "solver_order": 3}"#, "solver_order"),
            (r#"{"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true}"#, "use_karras_sigmas"),
            (r#"{"shift_factor": 3}"#, "shift_factor"),
            (r#"{"_class_name": "LCMScheduler"}"#, "_class_name"),
            (r#"{"num_train_timesteps": 0}"#, "num_train_timesteps"),
            (r#"{"trained_betas": [0.1, 2.0]}"#, "trained_betas"),
        ] {
            let e = sched(text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")) && e.contains("scheduler_config.json"), "{text}: {e}");
        }
        let e = sched("[1, 2]").unwrap_err().to_string();
        assert!(e.contains("expected a JSON object"), "{e}");
    }

    #[test]
    fn other_solvers_own_settings_are_accepted() {
        assert!(sched(r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true}"#).is_ok());
        assert!(sched(r#"{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "log_linear"}"#).is_ok());
        assert!(sched(r#"{"thresholding": false, "dynamic_thresholding_ratio": 0.9}"#).is_ok());
    }

    #[test]
    fn unet_config_gives_size_channels_and_classes() {
        let unet = |t: &str| unet_props(Path::new("config.json"), t);
        let p = unet(
            r#"{"_class_name": "UNet2DModel", "sample_size": 32, "in_channels": 3, "out_channels": 3,
            "num_class_embeds": 3, "class_embed_type": null}"#,
        )
        .unwrap();
        assert_eq!((p[meta::IMAGE_SIZE].as_str(), p[meta::CHANNELS].as_str()), ("32", "3"));
        assert_eq!((p[meta::CLASS_NAMES].as_str(), p[meta::NULL_CLASS].as_str()), ("0,1,2", meta::NO_NULL_CLASS));
        assert_eq!(unet(r#"{"sample_size": [16, 16], "in_channels": 1}"#).unwrap()[meta::CHANNELS], "1");
        for (text, key) in [
            (r#"{"_class_name": "UNet2DConditionModel", "sample_size": 64}"#, "_class_name"),
            (r#"{"sample_size": [16, 32]}"#, "sample_size"),
            (r#"{"sample_size": 32, "in_channels": 4}"#, "in_channels"),
            (r#"{"sample_size": 32, "in_channels": 3, "out_channels": 6}"#, "out_channels"),
            (r#"{"sample_size": 32, "class_embed_type": "timestep"}"#, "class_embed_type"),
        ] {
            let e = unet(text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
    }

    #[test]
    fn non_finite_tokens_inside_strings_stay() {
        assert_eq!(
            quote_non_finite(r#"{"a": "NaN \" Infinity", "b": -Infinity}"#),
            r#"{"a": "NaN \" Infinity", "b": "-Infinity"}"#
        );
    }
}
