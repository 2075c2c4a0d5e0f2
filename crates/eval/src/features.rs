//! The fixed feature space of `train eval`: colour statistics plus the globally pooled
//! activations of a small, seeded, *untrained* convolutional network ("random-network
//! features"). See the `eval` module docs for why this space and not Inception.
//!
//! Network: three 3x3 convolutions (3 -> 32 -> 64 -> 64 channels, He-normal weights drawn from
//! `GaussianStream(FEATURE_SEED)`, no bias, edge-replicating padding so the image border is not
//! a fake edge), each followed by ReLU; 2x2 average pooling between them, so the layers see
//! 1-, 2- and 4-pixel structure of the input. Every layer contributes the spatial mean and
//! standard deviation of each of its channels (320 numbers: how much of each random local
//! pattern there is, and how unevenly it is spread), and the image contributes its per-channel
//! mean, standard deviation and the three cross-channel covariances (9 numbers).
//!
//! Deterministic: weights come from the portable noise stream, every sum runs in a fixed order
//! in f32 (pooling in f64), there are no transcendental functions, and images are independent,
//! so the thread count does not change a bit.

use edgediff_core::GaussianStream;

/// Seed of the random filters. Changing it changes every reported number: it is part of the
/// metric's definition (as the Inception weights are part of FID's).
pub const FEATURE_SEED: u64 = 0x46_442D_4645_4154; // "FD-FEAT"
/// Output channels of the three convolutions.
pub const WIDTHS: [usize; 3] = [32, 64, 64];
/// Colour statistics per image: 3 means, 3 standard deviations, 3 covariances.
const COLOUR_FEATURES: usize = 9;
/// Version tag printed with results, bumped if the definition ever changes.
pub const FEATURE_SPACE: &str = "random-conv-v1";

struct Conv {
    cin: usize,
    cout: usize,
    /// `[cout][cin][3][3]`.
    weights: Vec<f32>,
}

impl Conv {
    /// Convolution (edge-replicating padding) followed by ReLU, on `cin` planes of `s`x`s`.
    fn forward_relu(&self, x: &[f32], s: usize) -> Vec<f32> {
        let p = s + 2;
        let mut padded = vec![0f32; self.cin * p * p];
        for c in 0..self.cin {
            for y in 0..p {
                let sy = y.saturating_sub(1).min(s - 1);
                for xx in 0..p {
                    let sx = xx.saturating_sub(1).min(s - 1);
                    padded[c * p * p + y * p + xx] = x[c * s * s + sy * s + sx];
                }
            }
        }
        let mut out = vec![0f32; self.cout * s * s];
        for (o, plane) in out.chunks_mut(s * s).enumerate() {
            for c in 0..self.cin {
                let input = &padded[c * p * p..(c + 1) * p * p];
                for k in 0..9 {
                    let (ky, kx) = (k / 3, k % 3);
                    let w = self.weights[(o * self.cin + c) * 9 + k];
                    for y in 0..s {
                        let src = &input[(y + ky) * p + kx..(y + ky) * p + kx + s];
                        for (acc, v) in plane[y * s..(y + 1) * s].iter_mut().zip(src) {
                            *acc += w * v;
                        }
                    }
                }
            }
            plane.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        out
    }
}

/// 2x2 average pooling of `channels` planes of `s`x`s` (an odd last row/column is dropped).
fn avg_pool2(x: &[f32], channels: usize, s: usize) -> Vec<f32> {
    let h = s / 2;
    let mut out = vec![0f32; channels * h * h];
    for c in 0..channels {
        let plane = &x[c * s * s..(c + 1) * s * s];
        for y in 0..h {
            for xx in 0..h {
                let i = 2 * y * s + 2 * xx;
                out[c * h * h + y * h + xx] = 0.25 * (plane[i] + plane[i + 1] + plane[i + s] + plane[i + s + 1]);
            }
        }
    }
    out
}

/// Appends the spatial mean and standard deviation of each of `channels` planes.
fn push_pooled(x: &[f32], channels: usize, plane: usize, out: &mut Vec<f32>) {
    for c in 0..channels {
        let v = &x[c * plane..(c + 1) * plane];
        let mean = v.iter().map(|&a| a as f64).sum::<f64>() / plane as f64;
        let var = v.iter().map(|&a| (a as f64 - mean) * (a as f64 - mean)).sum::<f64>() / plane as f64;
        out.push(mean as f32);
        out.push(var.sqrt() as f32);
    }
}

fn push_colour_stats(rgb: &[f32], plane: usize, out: &mut Vec<f32>) {
    let ch = |c: usize| &rgb[c * plane..(c + 1) * plane];
    let means: [f64; 3] = core::array::from_fn(|c| ch(c).iter().map(|&a| a as f64).sum::<f64>() / plane as f64);
    let cov = |a: usize, b: usize| {
        ch(a).iter().zip(ch(b)).map(|(&x, &y)| (x as f64 - means[a]) * (y as f64 - means[b])).sum::<f64>()
            / plane as f64
    };
    out.extend(means.iter().map(|&m| m as f32));
    out.extend((0..3).map(|c| cov(c, c).sqrt() as f32));
    out.extend([cov(0, 1), cov(0, 2), cov(1, 2)].iter().map(|&v| v as f32));
}

/// The fixed feature extractor (build once; it holds ~57k filter weights).
pub struct FeatureExtractor {
    layers: Vec<Conv>,
}

impl Default for FeatureExtractor {
    fn default() -> Self {
        Self::new()
    }
}

impl FeatureExtractor {
    pub fn new() -> FeatureExtractor {
        let mut noise = GaussianStream::new(FEATURE_SEED);
        let mut cin = 3;
        let mut layers = Vec::new();
        for &cout in &WIDTHS {
            let std = (2.0 / (cin * 9) as f64).sqrt() as f32;
            let mut weights = vec![0f32; cout * cin * 9];
            noise.fill(&mut weights);
            weights.iter_mut().for_each(|w| *w *= std);
            if cin == 3 {
                // First layer: each 3x3 kernel slice made zero-sum, so it ignores flat colour
                // (the colour statistics cover that) and responds only to spatial structure.
                for k in weights.chunks_mut(9) {
                    let mean = k.iter().sum::<f32>() / 9.0;
                    k.iter_mut().for_each(|w| *w -= mean);
                }
            }
            layers.push(Conv { cin, cout, weights });
            cin = cout;
        }
        FeatureExtractor { layers }
    }

    /// Length of a feature vector.
    pub fn dim(&self) -> usize {
        COLOUR_FEATURES + 2 * WIDTHS.iter().sum::<usize>()
    }

    /// Features of one CHW RGB image of `size`x`size` (size >= 4) in [-1, 1].
    pub fn extract(&self, rgb: &[f32], size: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.dim());
        push_colour_stats(rgb, size * size, &mut out);
        let mut x = rgb.to_vec();
        let mut s = size;
        for (l, conv) in self.layers.iter().enumerate() {
            if l > 0 && s >= 2 {
                x = avg_pool2(&x, conv.cin, s);
                s /= 2;
            }
            x = conv.forward_relu(&x, s);
            push_pooled(&x, conv.cout, s * s, &mut out);
        }
        out
    }

    /// Features of every image of a flat `[N, 3, size, size]` buffer, on up to `threads`
    /// threads (contiguous chunks, results in input order: the output does not depend on it).
    pub fn extract_all(&self, images: &[f32], size: usize, threads: usize) -> Vec<Vec<f32>> {
        let per = 3 * size * size;
        let all: Vec<&[f32]> = images.chunks_exact(per).collect();
        let chunk = all.len().div_ceil(threads.max(1)).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = all
                .chunks(chunk)
                .map(|part| scope.spawn(move || part.iter().map(|img| self.extract(img, size)).collect::<Vec<_>>()))
                .collect();
            // A feature thread only does arithmetic on in-bounds slices; if one panicked anyway,
            // re-raise it here rather than return a short, misaligned feature list.
            handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_and_thread_independence() {
        let fx = FeatureExtractor::new();
        let mut imgs = vec![0f32; 5 * 3 * 16 * 16];
        GaussianStream::new(1).fill(&mut imgs);
        imgs.iter_mut().for_each(|v| *v = v.clamp(-1.0, 1.0));
        let one = fx.extract_all(&imgs, 16, 1);
        let three = fx.extract_all(&imgs, 16, 3);
        assert_eq!(one.len(), 5);
        assert_eq!(one[0].len(), fx.dim());
        assert_eq!(fx.dim(), 329);
        let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&one), bits(&three));
    }

    #[test]
    fn flat_image_has_no_texture() {
        // A constant image: every filter response is constant, so every std feature is 0, and
        // the colour means are the pixel value.
        let fx = FeatureExtractor::new();
        let f = fx.extract(&vec![0.25; 3 * 8 * 8], 8);
        assert_eq!(&f[..3], &[0.25, 0.25, 0.25]);
        assert!(f[3..9].iter().all(|&v| v == 0.0));
        assert!(f[9..].iter().skip(1).step_by(2).all(|&v| v.abs() < 1e-6), "{f:?}");
        assert!(f[9..].iter().step_by(2).any(|&v| v > 0.0), "some filters respond");
    }
}
