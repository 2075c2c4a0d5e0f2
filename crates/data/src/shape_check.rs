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

use super::sprites::{sprite, SPRITE_CLASSES};

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

/// Least-squares plane a + b*x + c*y through (x, y, v) points, per channel.
fn fit_plane(points: &[(f32, f32, [f32; 3])]) -> [[f32; 3]; 3] {
    // Normal equations with a 3x3 matrix, solved by Cramer's rule (the matrix is well
    // conditioned: border points span the whole square).
    let (mut s1, mut sx, mut sy, mut sxx, mut sxy, mut syy) = (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
    let mut rhs = [[0f64; 3]; 3];
    for &(x, y, v) in points {
        let (x, y) = (x as f64, y as f64);
        s1 += 1.0;
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
        syy += y * y;
        for c in 0..3 {
            rhs[c][0] += v[c] as f64;
            rhs[c][1] += x * v[c] as f64;
            rhs[c][2] += y * v[c] as f64;
        }
    }
    let m = [[s1, sx, sy], [sx, sxx, sxy], [sy, sxy, syy]];
    let det3 = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1]) - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let det = det3(m);
    core::array::from_fn(|c| {
        if det.abs() < 1e-12 {
            return [(rhs[c][0] / s1.max(1.0)) as f32, 0.0, 0.0];
        }
        core::array::from_fn(|k| {
            let mut mk = m;
            for row in 0..3 {
                mk[row][k] = rhs[c][row];
            }
            (det3(mk) / det) as f32
        })
    })
}

/// The feature vector of one image, or `None` if there is no clear foreground.
fn features(chw: &[f32], size: usize) -> Option<Features> {
    let plane = size * size;
    let px = |x: usize, y: usize| -> [f32; 3] { core::array::from_fn(|c| (chw[c * plane + y * size + x] + 1.0) * 0.5) };
    let mut border: Vec<(f32, f32, [f32; 3])> = (0..size)
        .flat_map(|i| [(i, 0), (i, size - 1), (0, i), (size - 1, i)])
        .map(|(x, y)| (x as f32 + 0.5, y as f32 + 0.5, px(x, y)))
        .collect();
    let mut coef = fit_plane(&border);
    let bg_at = |coef: &[[f32; 3]; 3], x: f32, y: f32| -> [f32; 3] { core::array::from_fn(|c| coef[c][0] + coef[c][1] * x + coef[c][2] * y) };
    let dist = |a: [f32; 3], b: [f32; 3]| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt();
    // Refit without the quarter of border pixels that fit worst.
    border.sort_by(|a, b| dist(a.2, bg_at(&coef, a.0, a.1)).total_cmp(&dist(b.2, bg_at(&coef, b.0, b.1))));
    border.truncate(border.len() * 3 / 4);
    coef = fit_plane(&border);
    let border_rms = (border.iter().map(|b| dist(b.2, bg_at(&coef, b.0, b.1)).powi(2)).sum::<f32>()
        / border.len().max(1) as f32)
        .sqrt();

    let mut d = vec![0f32; plane];
    for y in 0..size {
        for x in 0..size {
            d[y * size + x] = dist(px(x, y), bg_at(&coef, x as f32 + 0.5, y as f32 + 0.5));
        }
    }
    let mut sorted = d.clone();
    sorted.sort_by(f32::total_cmp);
    let dmax = sorted[(plane * 98 / 100).min(plane - 1)];
    // Nothing stands out from the background, or the "background" is itself as busy as
    // the would-be object (noise, texture): no single shape to name.
    if dmax < 0.1 || border_rms > 0.35 * dmax {
        return None;
    }
    // Foreground colour: mean of the pixels far from the background.
    let (mut fg, mut nfg) = ([0f32; 3], 0f32);
    for y in 0..size {
        for x in 0..size {
            if d[y * size + x] >= 0.8 * dmax {
                let p = px(x, y);
                for c in 0..3 {
                    fg[c] += p[c];
                }
                nfg += 1.0;
            }
        }
    }
    fg.iter_mut().for_each(|v| *v /= nfg.max(1.0));
    let mut alpha = vec![0f32; plane];
    let (mut area, mut cx, mut cy) = (0f32, 0f32, 0f32);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let bg = bg_at(&coef, fx, fy);
            let p = px(x, y);
            let dir: [f32; 3] = core::array::from_fn(|c| fg[c] - bg[c]);
            let len2 = dir.iter().map(|v| v * v).sum::<f32>().max(1e-6);
            let a = (0..3).map(|c| (p[c] - bg[c]) * dir[c]).sum::<f32>() / len2;
            // Soft threshold around half coverage: anti-aliased edges keep their fraction,
            // while low-level noise all over the background (which a plain clamp to [0, 1]
            // would sum into a large phantom area, dragging the centroid) counts as nothing.
            let a = ((a - 0.25) * 2.0).clamp(0.0, 1.0);
            alpha[y * size + x] = a;
            area += a;
            cx += a * fx;
            cy += a * fy;
        }
    }
    if area < 3.0 {
        return None;
    }
    let (cx, cy) = (cx / area, cy / area);
    // Bilinear coverage at a pixel-space point; outside the image counts as background.
    let sample = |x: f32, y: f32| -> f32 {
        let (gx, gy) = (x - 0.5, y - 0.5);
        let (x0, y0) = (gx.floor(), gy.floor());
        let (tx, ty) = (gx - x0, gy - y0);
        let at = |xi: f32, yi: f32| {
            if xi < 0.0 || yi < 0.0 || xi >= size as f32 || yi >= size as f32 {
                0.0
            } else {
                alpha[yi as usize * size + xi as usize]
            }
        };
        (at(x0, y0) * (1.0 - tx) + at(x0 + 1.0, y0) * tx) * (1.0 - ty)
            + (at(x0, y0 + 1.0) * (1.0 - tx) + at(x0 + 1.0, y0 + 1.0) * tx) * ty
    };
    let mut radius = [0f32; RAYS];
    let (mut cos, mut sin) = ([0f32; RAYS], [0f32; RAYS]);
    for j in 0..RAYS {
        let theta = j as f32 * core::f32::consts::TAU / RAYS as f32;
        (cos[j], sin[j]) = (libm::cosf(theta), libm::sinf(theta));
        // The boundary is where the ray leaves the first inside run for good: outside for a
        // whole pixel (4 samples). Stray noisy pixels further out, or a single dark pixel
        // inside the shape, then do not move it. A ring's ray starts in the hole: its first
        // inside run is the ring itself.
        let (mut t, mut entered, mut outside_run) = (0.0f32, false, 0);
        while t < size as f32 * 1.5 {
            if sample(cx + t * cos[j], cy + t * sin[j]) >= 0.5 {
                entered = true;
                outside_run = 0;
                radius[j] = t;
            } else if entered {
                outside_run += 1;
                if outside_run >= 4 {
                    break;
                }
            }
            t += 0.25;
        }
    }
    let f0: f32 = radius.iter().sum();
    if f0 <= 0.0 {
        return None;
    }
    let mean_r = f0 / RAYS as f32;
    let mut f = [0f32; FEATURES];
    for (slot, &k) in f.iter_mut().zip(HARMONICS.iter()) {
        let (mut re, mut im) = (0f32, 0f32);
        for (j, r) in radius.iter().enumerate() {
            // cos/sin of k*theta_j by index arithmetic: no extra transcendental calls.
            let idx = (k * j) % RAYS;
            re += r * cos[idx];
            im += r * sin[idx];
        }
        *slot = (re * re + im * im).sqrt() / f0;
    }
    f[HARMONICS.len()] = sample(cx, cy);
    f[HARMONICS.len() + 1] = area / (core::f32::consts::PI * mean_r * mean_r);
    Some(f)
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
