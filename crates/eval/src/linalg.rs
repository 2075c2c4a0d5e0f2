//! The little dense linear algebra the Frechet distance needs: symmetric eigendecomposition
//! (cyclic Jacobi), and the trace of the matrix square root of a product of two covariances.
//!
//! Why hand-written rather than a crate: the matrices are small (a few hundred rows), Jacobi is
//! ~60 lines, accurate to high relative precision even for the tiny eigenvalues of rank-deficient
//! sample covariances, and uses only `+ - * /` and `sqrt` in a fixed order, so the distance has
//! the same bits on x86_64 and aarch64 (no BLAS, no FMA, no thread-count dependence).

/// A dense symmetric matrix, row-major, `n * n`.
#[derive(Debug, Clone, PartialEq)]
pub struct SymMatrix {
    pub n: usize,
    pub data: Vec<f64>,
}

impl SymMatrix {
    pub fn zeros(n: usize) -> Self {
        SymMatrix { n, data: vec![0.0; n * n] }
    }

    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.n + j]
    }

    pub fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.at(i, i)).sum()
    }
}

/// Eigenvalues and eigenvectors: `vectors[k]` (row k, length n) belongs to `values[k]`.
#[derive(Debug, Clone)]
pub struct Eigen {
    pub values: Vec<f64>,
    pub vectors: Vec<Vec<f64>>,
}

/// Cyclic Jacobi (Rutishauser's formulation, as in Numerical Recipes' `jacobi`): rotate away the
/// off-diagonal entries one pair at a time until their energy is at rounding level. Reads only
/// the matrix's upper triangle as given (it must be symmetric).
pub fn symmetric_eigen(m: &SymMatrix) -> Eigen {
    let n = m.n;
    let mut a = m.data.clone();
    // Rows of `v` are the eigenvectors (columns of the usual V), so updates touch contiguous rows.
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for sweep in 0..100 {
        let off = off_diagonal_energy(&a, n);
        if off == 0.0 || off <= total * 1e-32 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                // After a few sweeps, entries below the diagonal's rounding are simply dropped.
                if sweep > 3 && below_rounding(apq, app) && below_rounding(apq, aqq) {
                    a[p * n + q] = 0.0;
                    a[q * n + p] = 0.0;
                    continue;
                }
                Rotation::zeroing(app, aqq, apq).apply(&mut a, &mut v, n, p, q);
            }
        }
    }
    Eigen {
        values: (0..n).map(|i| a[i * n + i]).collect(),
        vectors: v.chunks(n.max(1)).map(|r| r.to_vec()).take(n).collect(),
    }
}

/// Sum of squares of the strict upper triangle of the `n * n` matrix `a`, row by row.
fn off_diagonal_energy(a: &[f64], n: usize) -> f64 {
    (0..n).flat_map(|p| (p + 1..n).map(move |q| (p, q))).map(|(p, q)| a[p * n + q] * a[p * n + q]).sum()
}

/// Whether the off-diagonal `apq` is too small to change the diagonal entry `aii` at all, even
/// a hundred times over.
fn below_rounding(apq: f64, aii: f64) -> bool {
    aii.abs() + 100.0 * apq.abs() == aii.abs()
}

/// A Jacobi rotation by angle phi in one (p, q) plane: `t = tan(phi)`, `s = sin(phi)` and
/// `tau = s / (1 + cos(phi))`, the form whose updates lose the least precision.
struct Rotation {
    t: f64,
    s: f64,
    tau: f64,
}

impl Rotation {
    /// The rotation that zeroes the off-diagonal `apq` of the 2x2 block `[[app, apq], [apq, aqq]]`
    /// (the smaller of the two angles that do).
    fn zeroing(app: f64, aqq: f64, apq: f64) -> Rotation {
        let theta = (aqq - app) / (2.0 * apq);
        let t = if theta.abs() > 1e150 {
            0.5 / theta
        } else {
            let t = 1.0 / (theta.abs() + (theta * theta + 1.0).sqrt());
            if theta < 0.0 {
                -t
            } else {
                t
            }
        };
        let c = 1.0 / (t * t + 1.0).sqrt();
        let s = t * c;
        let tau = s / (1.0 + c);
        Rotation { t, s, tau }
    }

    /// Applies the rotation in the (p, q) plane to the `n * n` matrix `a` (both triangles, with
    /// `a[p][q]` set to exactly 0) and to the eigenvector rows `p` and `q` of `v`.
    fn apply(&self, a: &mut [f64], v: &mut [f64], n: usize, p: usize, q: usize) {
        let Rotation { t, s, tau } = *self;
        let (app, aqq, apq) = (a[p * n + p], a[q * n + q], a[p * n + q]);
        let h = t * apq;
        a[p * n + p] = app - h;
        a[q * n + q] = aqq + h;
        a[p * n + q] = 0.0;
        a[q * n + p] = 0.0;
        for k in 0..n {
            if k == p || k == q {
                continue;
            }
            let (akp, akq) = (a[k * n + p], a[k * n + q]);
            let new_kp = akp - s * (akq + tau * akp);
            let new_kq = akq + s * (akp - tau * akq);
            a[k * n + p] = new_kp;
            a[p * n + k] = new_kp;
            a[k * n + q] = new_kq;
            a[q * n + k] = new_kq;
        }
        for k in 0..n {
            let (vp, vq) = (v[p * n + k], v[q * n + k]);
            v[p * n + k] = vp - s * (vq + tau * vp);
            v[q * n + k] = vq + s * (vp - tau * vq);
        }
    }
}

/// Eigenvalues at or below `n * eps * max|l|` are rounding noise (a rank-deficient matrix's
/// zero eigenvalues come out as +-1e-16 * max|l|): they count as zero. Without this, the square
/// roots of that noise (~1e-8 * sqrt(max|l|) each) would add up across hundreds of dimensions.
fn numerical_zero(values: &[f64]) -> f64 {
    let max = values.iter().fold(0.0f64, |a, l| a.max(l.abs()));
    values.len() as f64 * f64::EPSILON * max
}

/// The positive semi-definite square root `V diag(sqrt(l)) V^T` of a covariance, with
/// negative and numerically-zero eigenvalues set to 0.
pub fn psd_sqrt(m: &SymMatrix) -> SymMatrix {
    let e = symmetric_eigen(m);
    let n = m.n;
    let cutoff = numerical_zero(&e.values);
    let mut out = SymMatrix::zeros(n);
    for (lambda, vec) in e.values.iter().zip(&e.vectors) {
        let r = if *lambda > cutoff { lambda.sqrt() } else { 0.0 };
        if r == 0.0 {
            continue;
        }
        for (row, &vi) in out.data.chunks_mut(n).zip(vec) {
            let ri = r * vi;
            for (o, &vj) in row.iter_mut().zip(vec) {
                *o += ri * vj;
            }
        }
    }
    symmetrise(&mut out);
    out
}

/// `a * b` for square matrices (row-major), in a fixed summation order.
fn matmul(a: &SymMatrix, b: &SymMatrix) -> SymMatrix {
    let n = a.n;
    let mut out = SymMatrix::zeros(n);
    for i in 0..n {
        let row = &mut out.data[i * n..(i + 1) * n];
        for k in 0..n {
            let aik = a.data[i * n + k];
            if aik == 0.0 {
                continue;
            }
            let brow = &b.data[k * n..(k + 1) * n];
            for (o, bkj) in row.iter_mut().zip(brow) {
                *o += aik * bkj;
            }
        }
    }
    out
}

fn symmetrise(m: &mut SymMatrix) {
    let n = m.n;
    for i in 0..n {
        for j in i + 1..n {
            let avg = 0.5 * (m.data[i * n + j] + m.data[j * n + i]);
            m.data[i * n + j] = avg;
            m.data[j * n + i] = avg;
        }
    }
}

/// `Tr((A^1/2 B A^1/2)^1/2)` given `A^1/2` (so one root serves many comparisons against the
/// same reference set). The product is symmetric PSD, hence its root is well defined; equal
/// to `Tr((AB)^1/2)` (the usual FID formula) without needing a non-symmetric solver.
pub fn trace_sqrt_product(a_sqrt: &SymMatrix, b: &SymMatrix) -> f64 {
    let mut m = matmul(&matmul(a_sqrt, b), a_sqrt);
    symmetrise(&mut m);
    let values = symmetric_eigen(&m).values;
    let cutoff = numerical_zero(&values);
    values.iter().filter(|&&l| l > cutoff).map(|l| l.sqrt()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_spd(n: usize, rank: usize, seed: u64) -> SymMatrix {
        let mut g = edgediff_core::GaussianStream::new(seed);
        let x: Vec<f64> = (0..n * rank).map(|_| g.next_normal() as f64).collect();
        let mut m = SymMatrix::zeros(n);
        for i in 0..n {
            for j in 0..n {
                m.data[i * n + j] = (0..rank).map(|k| x[i * rank + k] * x[j * rank + k]).sum();
            }
        }
        m
    }

    #[test]
    fn eigendecomposition_reconstructs_the_matrix() {
        for (n, rank) in [(1, 1), (5, 5), (40, 40), (40, 7)] {
            let m = random_spd(n, rank, n as u64 * 31 + rank as u64);
            let e = symmetric_eigen(&m);
            let scale = m.data.iter().fold(0.0f64, |a, b| a.max(b.abs()));
            for i in 0..n {
                for j in 0..n {
                    let r: f64 = (0..n).map(|k| e.values[k] * e.vectors[k][i] * e.vectors[k][j]).sum();
                    assert!(
                        (r - m.at(i, j)).abs() <= 1e-10 * scale,
                        "n {n} rank {rank} ({i},{j}): {r} vs {}",
                        m.at(i, j)
                    );
                }
                for j in 0..n {
                    let dot: f64 = (0..n).map(|k| e.vectors[i][k] * e.vectors[j][k]).sum();
                    let want = if i == j { 1.0 } else { 0.0 };
                    assert!((dot - want).abs() < 1e-10, "orthonormality ({i},{j}) {dot}");
                }
            }
            let zero = e.values.iter().filter(|l| l.abs() < 1e-9 * scale).count();
            assert_eq!(zero, n - rank, "rank {rank} matrix must have {} zero eigenvalues: {:?}", n - rank, e.values);
        }
    }

    #[test]
    fn known_eigenvalues_and_root() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let m = SymMatrix { n: 2, data: vec![2.0, 1.0, 1.0, 2.0] };
        let mut l = symmetric_eigen(&m).values;
        l.sort_by(f64::total_cmp);
        assert!((l[0] - 1.0).abs() < 1e-14 && (l[1] - 3.0).abs() < 1e-14, "{l:?}");
        let r = psd_sqrt(&m);
        let rr = matmul(&r, &r);
        for (x, y) in rr.data.iter().zip(&m.data) {
            assert!((x - y).abs() < 1e-12, "{:?}", rr.data);
        }
    }

    #[test]
    fn trace_sqrt_of_a_matrix_with_itself_is_its_trace() {
        let m = random_spd(30, 12, 5);
        let t = trace_sqrt_product(&psd_sqrt(&m), &m);
        assert!((t - m.trace()).abs() < 1e-9 * m.trace(), "{t} vs {}", m.trace());
    }
}
