//! `--class` and `--guidance`, checked against the model before anything is sampled: a flag the
//! model cannot honour is a usage error that says what the model offers.

use clap::Args;
use edgediff_core::meta::ModelMeta;
use edgediff_core::{CoreError, Guidance};

use crate::{parse, UsageError};

/// `--class NAME|INDEX` and `--guidance W`.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct ClassArgs {
    /// Class to generate, for a class-conditional model: a name (see `sampler info`) or an
    /// index. Without it a conditional model samples unconditionally (the null class)
    #[arg(long, value_name = "NAME|INDEX")]
    pub class: Option<String>,
    /// Classifier-free guidance scale W (needs --class): uncond + W (cond - uncond); 1 = the
    /// class alone, 0 = unconditional; other values cost two evaluations per image
    /// [default: the model's recommended scale (`sampler info`), else 1]
    #[arg(long, value_name = "W", allow_negative_numbers = true, value_parser = parse::guidance)]
    pub guidance: Option<f32>,
}

/// The class and guidance a run uses.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassChoice {
    /// Index into the model's classes; `None` = the null class (unconditional).
    pub index: Option<usize>,
    pub name: Option<String>,
    /// The scale: --guidance, else the model's `edgediff.guidance_scale` (`None` = 1 with a class).
    pub scale: Option<f32>,
    /// The model takes class labels at all.
    pub conditional: bool,
}

impl ClassChoice {
    /// The guidance scale in effect, for the records: 1 with a class and no scale from the flag or the model.
    pub fn effective_scale(&self) -> Option<f32> {
        self.index.map(|_| self.scale.unwrap_or(1.0))
    }

    /// One phrase for a summary line, empty for an unconditional model.
    pub fn describe(&self) -> String {
        match (&self.name, self.effective_scale()) {
            (Some(name), Some(w)) => format!(", class {name}, guidance {w}"),
            _ if self.conditional => ", unconditional (null class)".into(),
            _ => String::new(),
        }
    }
}

/// Resolves `--class` (a name, or an index into the model's classes) and `--guidance` for a
/// model whose graph does (`conditional`) or does not take class labels.
pub fn resolve_class(args: &ClassArgs, meta: &ModelMeta, conditional: bool) -> Result<ClassChoice, UsageError> {
    let (class, scale) = (args.class.as_deref(), args.guidance);
    if !conditional && (class.is_some() || scale.is_some()) {
        let flag = if class.is_some() { "--class" } else { "--guidance" };
        return Err(UsageError(format!(
            "{flag}: model `{}` is not class-conditional (it has no `class_labels` input)",
            meta.model_name
        )));
    }
    if class.is_none() && scale.is_some() {
        return Err(UsageError("--guidance needs --class (without a class the model samples unconditionally)".into()));
    }
    let index = match class {
        None => None,
        Some(_) if meta.class_names.is_empty() => {
            return Err(UsageError(format!(
                "--class: model `{}` takes class labels but its metadata names no classes (supply --meta class_names=A,B,...)",
                meta.model_name
            )))
        }
        Some(c) => Some(meta.class_index(c).map_err(|e| match e {
            CoreError::UnknownClass { reason, .. } => UsageError(format!("--class {c}: {reason}")),
            other => UsageError(format!("--class {c}: {other}")),
        })?),
    };
    // The same checks the runtime makes, here so that they are usage errors.
    let mode = Guidance::new(index.is_some(), scale).map_err(|e| UsageError(format!("--guidance: {e}")))?;
    if conditional && !meta.has_null_class && mode != Guidance::Conditional {
        let what = match index {
            None => "--class: model `{}` has no null class (no unconditional model), so it samples only a given class: add --class NAME|INDEX",
            Some(_) => "--guidance: model `{}` has no null class (no unconditional model), so classifier-free guidance is impossible: leave --guidance out or give 1",
        };
        return Err(UsageError(what.replace("{}", &meta.model_name)));
    }
    // No --guidance: the scale the model file recommends, if it names one.
    let scale = scale.or(index.and(meta.guidance_scale));
    Ok(ClassChoice { index, name: index.map(|i| meta.class_names[i].clone()), scale, conditional })
}
