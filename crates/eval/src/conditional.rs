//! `train eval --class`: scores a class-conditional model class by class.
//!
//! For each requested class the model's samples of that class are compared with held-out real
//! images of the same class (FD, with that class's own floor), and, for sprites, the shape
//! checker says which share of them shows the requested shape: the conditional accuracy
//! (unrecognised samples count as wrong; the checker's own accuracy on real sprites bounds
//! it, see `data::shape_check`). With several classes, all samples pooled are also scored
//! against the unfiltered real data, as an unconditional model would be.

use serde_json::{json, Value};

use super::images::ImageSet;
use super::{evaluate, evaluate_class, EvalError, EvalOptions, EvalReport};

/// One class's samples and scores.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassResult {
    pub index: usize,
    pub name: String,
    pub report: EvalReport,
}

impl ClassResult {
    /// Share of the samples the shape checker assigns to this class (sprites only).
    pub fn accuracy(&self) -> Option<f64> {
        let shapes = self.report.shapes.as_ref()?;
        let hits = shapes.classes.get(self.index)?.samples;
        Some(hits as f64 / self.report.count.max(1) as f64)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConditionalReport {
    /// The guidance scale in effect (1 = the class alone).
    pub guidance: f32,
    pub classes: Vec<ClassResult>,
    /// All classes' samples pooled vs the unfiltered real data (when more than one class).
    pub overall: Option<EvalReport>,
}

/// Scores each `(class index, class name, samples)` against its class, and the pool of all
/// of them against the whole dataset. Every class should have the same number of samples.
pub fn evaluate_classes(
    per_class: &[(usize, String, ImageSet)],
    guidance: f32,
    opts: &EvalOptions,
) -> Result<ConditionalReport, EvalError> {
    let mut classes = Vec::with_capacity(per_class.len());
    for (index, name, samples) in per_class {
        let report = evaluate_class(samples, opts, *index)?;
        classes.push(ClassResult { index: *index, name: name.clone(), report });
    }
    let overall = match per_class {
        [_, _, ..] => {
            // Interleaved (sample i of every class, then i+1 ...) so truncating the pool to the
            // size of the real sets keeps the classes balanced.
            let first = &per_class[0].2;
            let n = per_class.iter().map(|(_, _, s)| s.len()).min().unwrap_or(0);
            let mut data = Vec::with_capacity(n * per_class.len() * first.per_image());
            for i in 0..n {
                for (_, _, set) in per_class {
                    data.extend_from_slice(set.image(i));
                }
            }
            let pooled = ImageSet { channels: first.channels, size: first.size, data };
            let opts = EvalOptions { count: pooled.len(), ..opts.clone() };
            Some(evaluate(&pooled, &opts)?)
        }
        _ => None,
    };
    Ok(ConditionalReport { guidance, classes, overall })
}

fn percent(v: Option<f64>) -> String {
    v.map(|a| format!("{:.1}%", 100.0 * a)).unwrap_or_else(|| "-".into())
}

impl ConditionalReport {
    /// The per-class table, then the pooled (or single-class) full report.
    pub fn table(&self) -> String {
        let n = self.classes.first().map(|c| c.report.count).unwrap_or(0);
        let mut s = format!(
            "class-conditional, guidance {}, N = {n} samples per class, FD against real images of the class\n",
            self.guidance
        );
        s += &format!("  {:<12} {:>9} {:>12} {:>12} {:>9}\n", "class", "accuracy", "FD", "floor", "x floor");
        for c in &self.classes {
            let r = &c.report;
            s += &format!(
                "  {:<12} {:>9} {:>12.4} {:>12.4} {:>9.2}\n",
                c.name,
                percent(c.accuracy()),
                r.fd_samples,
                r.fd_floor,
                r.ratio_to_floor(r.fd_samples)
            );
        }
        let accuracies: Vec<f64> = self.classes.iter().filter_map(ClassResult::accuracy).collect();
        if !accuracies.is_empty() {
            s += &format!(
                "accuracy = share of a class's samples the shape checker assigns to that class; mean {:.1}%\n",
                100.0 * accuracies.iter().sum::<f64>() / accuracies.len() as f64
            );
        }
        match (&self.overall, self.classes.as_slice()) {
            (Some(overall), _) => s += &format!("all classes pooled vs the whole dataset:\n{}", overall.table()),
            (None, [one]) => s += &format!("class {}:\n{}", one.name, one.report.table()),
            _ => {}
        }
        s
    }

    pub fn to_json(&self) -> Value {
        json!({
            "guidance": self.guidance,
            "classes": self.classes.iter().map(|c| json!({
                "index": c.index,
                "name": c.name,
                "accuracy": c.accuracy(),
                "report": c.report.to_json(),
            })).collect::<Vec<_>>(),
            "overall": self.overall.as_ref().map(EvalReport::to_json),
        })
    }
}
