//! `--class` and `--guidance`, checked against the model before anything is sampled: flags a
//! model cannot honour are usage errors (exit 2) that say what the model offers.

use anyhow::Result;
use edgediff_core::meta::ModelMeta;
use edgediff_core::Guidance;

use crate::UsageError;

/// The class and guidance a run uses.
#[derive(Debug, Clone)]
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

    /// One phrase for the summary line, empty for an unconditional model.
    pub fn describe(&self) -> String {
        match (&self.name, self.effective_scale()) {
            (Some(name), Some(w)) => format!(", class {name}, guidance {w}"),
            _ if self.conditional => ", unconditional (null class)".into(),
            _ => String::new(),
        }
    }
}

/// Resolves `--class` (a name, or an index into the model's classes) and `--guidance` for a
/// model whose graph does (`conditional`) or does not take `class_labels`.
pub fn resolve(class: Option<&str>, scale: Option<f32>, meta: &ModelMeta, conditional: bool) -> Result<ClassChoice> {
    let names = &meta.class_names;
    if !conditional && (class.is_some() || scale.is_some()) {
        let flag = if class.is_some() { "--class" } else { "--guidance" };
        return Err(UsageError(format!(
            "{flag}: model `{}` is not class-conditional (it has no `class_labels` input)",
            meta.model_name
        ))
        .into());
    }
    if class.is_none() && scale.is_some() {
        return Err(UsageError("--guidance needs --class (without a class the model samples unconditionally)".into()).into());
    }
    let index = match class {
        None => None,
        Some(_) if names.is_empty() => {
            return Err(UsageError(format!(
                "--class: model `{}` takes class labels but its metadata names no classes (supply --meta class_names=A,B,...)",
                meta.model_name
            ))
            .into())
        }
        Some(c) => Some(match (names.iter().position(|n| n == c), c.parse::<usize>()) {
            (Some(i), _) => i,
            (None, Ok(i)) if i < names.len() => i,
            _ => {
                return Err(UsageError(format!(
                    "--class {c}: unknown class; model `{}` has classes {} (or an index 0..={})",
                    meta.model_name,
                    names.join(", "),
                    names.len() - 1
                ))
                .into())
            }
        }),
    };
    // The same check the runtime makes, here so that a bad scale is a usage error.
    Guidance::new(index.is_some(), scale).map_err(|e| UsageError(format!("--guidance: {e}")))?;
    // No --guidance: the scale the model file recommends, if it names one.
    let scale = scale.or(index.and(meta.guidance_scale));
    Ok(ClassChoice { index, name: index.map(|i| names[i].clone()), scale, conditional })
}
