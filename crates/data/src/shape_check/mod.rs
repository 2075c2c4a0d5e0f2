//! A small, non-neural "shape checker": says which sprite class a (generated) image shows, so
//! `train eval` can measure whether samples look like the training shapes.
//!
//! How it works, and why:
//! 1. The sprite background is a *linear* gradient and shapes never touch the border, so a
//!    least-squares plane fitted to the border pixels (refitted without the worst quarter, to
//!    tolerate a generated image that bleeds into the border) predicts the background everywhere.
//! 2. Soft coverage per pixel = projection of (pixel - background) onto (foreground - background),
//!    with the foreground colour estimated from the pixels farthest from the background,
//!    soft-thresholded around 1/2 so background noise does not add up to phantom area.
//! 3. Rotation-invariant features of that coverage mask: the radial profile r(theta) from the
//!    centroid, summarised by its Fourier magnitudes |F2|..|F6| / F0 (a diamond is 2-fold, a
//!    triangle 3-fold, square and plus 4-fold, a star 5-fold, a circle flat), how filled the
//!    centre is (rings are hollow), and area / (pi * mean r^2) (a plus is much emptier than a
//!    square).
//! 4. k-nearest-neighbours (k = 7) on standardised features against reference sprites rendered
//!    at the same size from a fixed seed: no hand-tuned thresholds, works at 16 and 32 pixels.

mod features;

use super::sprites::{sprite, SPRITE_CLASSES};
use features::features;

const RAYS: usize = 64;
const HARMONICS: [usize; 5] = [2, 3, 4, 5, 6];
const FEATURES: usize = HARMONICS.len() + 2;
const K: usize = 7;
/// Seed of the reference sprites. Held-out evaluation must use a different seed.
pub const REFERENCE_SEED: u64 = 0x5348_4150_4553;
const REFERENCE_COUNT: u64 = 1400;

/// Verdict on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeVerdict {
    pub class: usize,
    /// Fraction of the k nearest references that agree, in (0, 1].
    pub confidence: f32,
}

type Features = [f32; FEATURES];

pub struct ShapeChecker {
    size: usize,
    references: Vec<(Features, usize)>,
    mean: Features,
    scale: Features,
}

impl ShapeChecker {
    /// Builds the reference set for `size`x`size` images (about 1400 renders: well under a second).
    pub fn new(size: usize) -> ShapeChecker {
        let references: Vec<(Features, usize)> = (0..REFERENCE_COUNT)
            .filter_map(|i| {
                let (img, class) = sprite(REFERENCE_SEED, i, size);
                features(&img, size).map(|f| (f, class))
            })
            .collect();
        let n = references.len().max(1) as f32;
        let mean: Features = core::array::from_fn(|j| references.iter().map(|r| r.0[j]).sum::<f32>() / n);
        let scale: Features = core::array::from_fn(|j| {
            let var = references.iter().map(|r| (r.0[j] - mean[j]).powi(2)).sum::<f32>() / n;
            1.0 / var.sqrt().max(1e-6)
        });
        ShapeChecker { size, references, mean, scale }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Classifies a CHW RGB image in [-1, 1] of this checker's size. `None` when no single
    /// foreground object stands out from the background (blank, or pure noise).
    pub fn classify(&self, chw: &[f32]) -> Option<ShapeVerdict> {
        if chw.len() != 3 * self.size * self.size {
            return None;
        }
        let f = features(chw, self.size)?;
        let z: Features = core::array::from_fn(|j| (f[j] - self.mean[j]) * self.scale[j]);
        let mut dists: Vec<(f32, usize)> = self
            .references
            .iter()
            .map(|(r, c)| {
                let d = (0..FEATURES).map(|j| ((r[j] - self.mean[j]) * self.scale[j] - z[j]).powi(2)).sum::<f32>();
                (d, *c)
            })
            .collect();
        dists.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut votes = [0usize; SPRITE_CLASSES.len()];
        for &(_, c) in dists.iter().take(K) {
            votes[c] += 1;
        }
        // Ties go to the class of the nearest neighbour among the tied ones.
        let best = *votes.iter().max()?;
        let class = dists.iter().take(K).map(|d| d.1).find(|&c| votes[c] == best)?;
        Some(ShapeVerdict { class, confidence: best as f32 / K.min(dists.len()).max(1) as f32 })
    }

    /// Accuracy on `count` sprites of `seed` (pass a seed other than [`REFERENCE_SEED`]), and the
    /// confusion matrix `[true][predicted]` with an extra last column for "no shape found".
    /// `noise_std` > 0 adds Gaussian noise (in the [-1, 1] pixel scale) to each sprite, to see
    /// how the checker copes with imperfect, generated-looking images.
    pub fn accuracy(&self, seed: u64, count: u64, noise_std: f32) -> (f32, Vec<Vec<usize>>) {
        let n = SPRITE_CLASSES.len();
        let mut confusion = vec![vec![0usize; n + 1]; n];
        for i in 0..count {
            let (mut img, class) = sprite(seed, i, self.size);
            if noise_std > 0.0 {
                let mut noise = vec![0f32; img.len()];
                edgediff_core::GaussianStream::new(super::rng::mix(&[seed, i, 0x4E])).fill(&mut noise);
                img.iter_mut().zip(&noise).for_each(|(v, z)| *v = (*v + noise_std * z).clamp(-1.0, 1.0));
            }
            let predicted = self.classify(&img).map(|v| v.class).unwrap_or(n);
            confusion[class][predicted] += 1;
        }
        let right: usize = (0..n).map(|c| confusion[c][c]).sum();
        (right as f32 / count.max(1) as f32, confusion)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_wrong_sized_images_have_no_shape() {
        let c = ShapeChecker::new(16);
        assert_eq!(c.classify(&vec![0.3; 3 * 256]), None);
        assert_eq!(c.classify(&[0.3; 10]), None);
    }

    #[test]
    fn held_out_accuracy_32() {
        let c = ShapeChecker::new(32);
        let (acc, confusion) = c.accuracy(REFERENCE_SEED + 1, 700, 0.0);
        assert!(acc >= 0.98, "accuracy {acc}, confusion {confusion:?}");
        let (acc, confusion) = c.accuracy(REFERENCE_SEED + 1, 700, 0.1);
        assert!(acc >= 0.97, "accuracy with noise 0.1: {acc}, confusion {confusion:?}");
        let (acc, confusion) = c.accuracy(REFERENCE_SEED + 1, 700, 0.2);
        assert!(acc >= 0.9, "accuracy with noise 0.2: {acc}, confusion {confusion:?}");
    }

    #[test]
    fn pure_noise_has_no_shape() {
        let c = ShapeChecker::new(32);
        let mut none = 0;
        for seed in 0..20u64 {
            let mut img = vec![0f32; 3 * 32 * 32];
            edgediff_core::GaussianStream::new(seed).fill(&mut img);
            img.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
            none += c.classify(&img).is_none() as usize;
        }
        assert!(none >= 19, "{none}/20 noise images rejected");
    }

    #[test]
    fn held_out_accuracy_16() {
        let c = ShapeChecker::new(16);
        let (acc, confusion) = c.accuracy(REFERENCE_SEED + 1, 700, 0.0);
        assert!(acc >= 0.98, "accuracy {acc}, confusion {confusion:?}");
        let (acc, confusion) = c.accuracy(REFERENCE_SEED + 1, 700, 0.1);
        assert!(acc >= 0.97, "accuracy with noise 0.1: {acc}, confusion {confusion:?}");
    }
}
