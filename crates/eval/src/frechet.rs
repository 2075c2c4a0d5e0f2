//! The Frechet distance between two Gaussians fitted to feature sets:
//! `FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)` (Dowson & Landau 1982; the
//! formula behind FID, Heusel et al. 2017).

use super::linalg::{psd_sqrt, trace_sqrt_product, SymMatrix};

/// Mean and (unbiased, N-1) covariance of a feature set, in f64.
#[derive(Debug, Clone)]
pub struct Gaussian {
    pub mean: Vec<f64>,
    pub cov: SymMatrix,
    pub count: usize,
}

impl Gaussian {
    /// Fits rows of equal length `dim`. Needs at least two rows (a covariance needs N-1 >= 1);
    /// callers check that, so fewer rows give a zero covariance rather than a panic.
    pub fn fit(rows: &[Vec<f32>], dim: usize) -> Gaussian {
        let n = rows.len();
        let mut mean = vec![0.0f64; dim];
        for r in rows {
            for (m, &x) in mean.iter_mut().zip(r) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut cov = SymMatrix::zeros(dim);
        let mut centred = vec![0.0f64; dim];
        for r in rows {
            for ((c, &x), m) in centred.iter_mut().zip(r).zip(&mean) {
                *c = x as f64 - m;
            }
            for i in 0..dim {
                let ci = centred[i];
                let row = &mut cov.data[i * dim..(i + 1) * dim];
                // Upper triangle only; mirrored below.
                for j in i..dim {
                    row[j] += ci * centred[j];
                }
            }
        }
        let denom = n.saturating_sub(1).max(1) as f64;
        for i in 0..dim {
            for j in i..dim {
                let v = cov.data[i * dim + j] / denom;
                cov.data[i * dim + j] = v;
                cov.data[j * dim + i] = v;
            }
        }
        Gaussian { mean, cov, count: n }
    }
}

/// A reference Gaussian with its covariance root precomputed, so each comparison against it
/// costs one eigendecomposition instead of two.
#[derive(Debug, Clone)]
pub struct Reference {
    pub gaussian: Gaussian,
    cov_sqrt: SymMatrix,
}

impl Reference {
    pub fn new(gaussian: Gaussian) -> Reference {
        let cov_sqrt = psd_sqrt(&gaussian.cov);
        Reference { gaussian, cov_sqrt }
    }

    /// FD between `other` and this reference. Rounding can leave a tiny negative value for
    /// identical inputs; it is reported as 0.
    pub fn distance(&self, other: &Gaussian) -> f64 {
        let a = &self.gaussian;
        let mean_term: f64 = a.mean.iter().zip(&other.mean).map(|(x, y)| (x - y) * (x - y)).sum();
        let cross = trace_sqrt_product(&self.cov_sqrt, &other.cov);
        (mean_term + a.cov.trace() + other.cov.trace() - 2.0 * cross).max(0.0)
    }
}

/// FD between two fitted Gaussians.
pub fn frechet_distance(a: &Gaussian, b: &Gaussian) -> f64 {
    Reference::new(a.clone()).distance(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian_1d(mean: f64, var: f64) -> Gaussian {
        Gaussian { mean: vec![mean], cov: SymMatrix { n: 1, data: vec![var] }, count: 2 }
    }

    #[test]
    fn one_dimensional_closed_form() {
        // FD of N(m1, s1^2) and N(m2, s2^2) is (m1 - m2)^2 + (s1 - s2)^2.
        let fd = frechet_distance(&gaussian_1d(1.0, 4.0), &gaussian_1d(-2.0, 9.0));
        assert!((fd - (9.0 + 1.0)).abs() < 1e-12, "{fd}");
    }

    #[test]
    fn diagonal_closed_form() {
        let a = Gaussian { mean: vec![0.0, 1.0], cov: SymMatrix { n: 2, data: vec![1.0, 0.0, 0.0, 16.0] }, count: 2 };
        let b = Gaussian { mean: vec![0.0, 0.0], cov: SymMatrix { n: 2, data: vec![4.0, 0.0, 0.0, 9.0] }, count: 2 };
        let fd = frechet_distance(&a, &b);
        assert!((fd - (1.0 + 1.0 + 1.0)).abs() < 1e-12, "{fd}");
    }

    #[test]
    fn fit_matches_hand_computation() {
        let rows = vec![vec![1.0f32, 2.0], vec![3.0, 6.0], vec![5.0, 4.0]];
        let g = Gaussian::fit(&rows, 2);
        assert_eq!(g.mean, vec![3.0, 4.0]);
        // deviations: (-2,-2), (0,2), (2,0) -> cov = [[8, 4], [4, 8]] / 2
        assert_eq!(g.cov.data, vec![4.0, 2.0, 2.0, 4.0]);
    }
}
