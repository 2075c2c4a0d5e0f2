//! The parity measures: bit identity of the starting noise, PSNR of the final sample.

use crate::reference::Array;

/// How two arrays differ bit for bit.
#[derive(Debug, Clone, PartialEq)]
pub struct BitCompare {
    pub same_shape: bool,
    /// Values whose f32 bit patterns differ (all of them if the shapes differ).
    pub differing: usize,
    pub total: usize,
    pub max_abs_diff: f64,
}

impl BitCompare {
    pub fn identical(&self) -> bool {
        self.same_shape && self.differing == 0
    }

    /// One-line summary, e.g. `bit-identical (3072 values)` or `17 of 3072 values differ (max |diff| 2e-7)`.
    pub fn describe(&self) -> String {
        if !self.same_shape {
            format!("shape differs from the reference's ({} values expected)", self.total)
        } else if self.differing == 0 {
            format!("bit-identical ({} values)", self.total)
        } else {
            format!("{} of {} values differ (max |diff| {:.3e})", self.differing, self.total, self.max_abs_diff)
        }
    }
}

/// Compares `got` with `want` bit for bit (so -0.0 != 0.0 and NaN payloads count).
pub fn compare_bits(got: &Array, want: &Array) -> BitCompare {
    if got.shape != want.shape || got.data.len() != want.data.len() {
        return BitCompare {
            same_shape: false,
            differing: got.data.len(),
            total: want.data.len(),
            max_abs_diff: f64::INFINITY,
        };
    }
    let mut differing = 0;
    let mut max_abs_diff = 0f64;
    for (a, b) in got.data.iter().zip(&want.data) {
        if a.to_bits() != b.to_bits() {
            differing += 1;
            max_abs_diff = max_abs_diff.max((*a as f64 - *b as f64).abs());
        }
    }
    BitCompare { same_shape: true, differing, total: want.data.len(), max_abs_diff }
}

/// Peak signal-to-noise ratio of `got` against `want`, in dB.
///
/// Definition: both arrays are mapped from the model's value range `(lo, hi)` to [0, 1] by
/// `(v - lo) / (hi - lo)` (no clipping, so values that leave the range still count), then
/// `PSNR = 10 * log10(1 / MSE)` with the mean over every value of the batch, computed in f64.
/// Identical arrays give `f64::INFINITY`. 50 dB means an RMS error of 0.3 % of the range,
/// about 0.8 of one 8-bit level, so at most a few pixels move by one level.
pub fn psnr_db(got: &Array, want: &Array, range: (f64, f64)) -> Result<f64, String> {
    let (lo, hi) = range;
    if !lo.is_finite() || !hi.is_finite() || hi <= lo {
        return Err(format!("invalid value range {lo}..{hi}"));
    }
    if got.shape != want.shape || got.data.len() != want.data.len() {
        return Err(format!("shape {:?} differs from the reference's {:?}", got.shape, want.shape));
    }
    if want.data.is_empty() {
        return Err("empty arrays".into());
    }
    let scale = 1.0 / (hi - lo);
    let mut sum = 0f64;
    for (a, b) in got.data.iter().zip(&want.data) {
        let d = (*a as f64 - *b as f64) * scale;
        sum += d * d;
    }
    let mse = sum / want.data.len() as f64;
    if !mse.is_finite() {
        return Err("the sample contains NaN or Inf".into());
    }
    Ok(if mse == 0.0 { f64::INFINITY } else { 10.0 * (1.0 / mse).log10() })
}

/// `52.31 dB`, or `inf dB` (identical).
pub fn format_db(db: f64) -> String {
    if db.is_infinite() {
        "inf dB".into()
    } else {
        format!("{db:.2} dB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arr(data: Vec<f32>) -> Array {
        Array { shape: vec![1, 1, 1, data.len()], data }
    }

    #[test]
    fn psnr_uses_the_value_range() {
        let want = arr(vec![0.0; 100]);
        let mut got = want.clone();
        assert_eq!(psnr_db(&got, &want, (-1.0, 1.0)).unwrap(), f64::INFINITY);
        got.data[0] = 0.2; // mapped error 0.1 on one of 100 values: MSE 1e-4 -> 40 dB
        let db = psnr_db(&got, &want, (-1.0, 1.0)).unwrap();
        assert!((db - 40.0).abs() < 1e-6, "{db}"); // 0.2f32 is not exactly 0.2
        let db01 = psnr_db(&got, &want, (0.0, 1.0)).unwrap(); // error 0.2 -> MSE 4e-4
        assert!((db01 - (40.0 - 20.0 * 2f64.log10())).abs() < 1e-6, "{db01}");
        assert!(psnr_db(&arr(vec![0.0; 3]), &want, (-1.0, 1.0)).is_err());
        assert!(psnr_db(&got, &want, (1.0, 1.0)).is_err());
        got.data[1] = f32::NAN;
        assert!(psnr_db(&got, &want, (-1.0, 1.0)).is_err());
    }

    #[test]
    fn bit_compare_sees_sign_of_zero_and_shape() {
        let want = arr(vec![0.0, 1.0, 2.0]);
        assert!(compare_bits(&want.clone(), &want).identical());
        let c = compare_bits(&arr(vec![-0.0, 1.0, 2.5]), &want);
        assert_eq!((c.differing, c.total, c.max_abs_diff), (2, 3, 0.5));
        assert!(!c.identical());
        assert!(c.describe().starts_with("2 of 3 values differ"), "{}", c.describe());
        assert!(!compare_bits(&arr(vec![0.0, 1.0]), &want).identical());
    }
}
