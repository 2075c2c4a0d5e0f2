//! The rotation-invariant feature vector of one image (steps 1-3 of the module description):
//! background plane, soft foreground coverage, radial profile and its Fourier magnitudes.

use super::{Features, FEATURES, HARMONICS, RAYS};

/// The feature vector of one image, or `None` if there is no clear foreground.
pub(super) fn features(chw: &[f32], size: usize) -> Option<Features> {
    let img = Image { chw, size };
    let (bg, border_rms) = fit_background(&img);
    let d = distance_map(&img, &bg);
    let dmax = percentile_98(&d);
    // Nothing stands out from the background, or the "background" is itself as busy as
    // the would-be object (noise, texture): no single shape to name.
    if dmax < 0.1 || border_rms > 0.35 * dmax {
        return None;
    }
    let fg = foreground_colour(&img, &d, dmax);
    let cov = coverage(&img, &bg, fg);
    if cov.area < 3.0 {
        return None;
    }
    let (cx, cy) = cov.centroid();
    let rays = Rays::new();
    let radius = radial_profile(&cov, cx, cy, &rays);
    let f0: f32 = radius.iter().sum();
    if f0 <= 0.0 {
        return None;
    }
    let mean_r = f0 / RAYS as f32;
    let mut f = [0f32; FEATURES];
    f[..HARMONICS.len()].copy_from_slice(&harmonic_magnitudes(&radius, &rays, f0));
    f[HARMONICS.len()] = cov.sample(cx, cy);
    f[HARMONICS.len() + 1] = cov.area / (core::f32::consts::PI * mean_r * mean_r);
    Some(f)
}

/// A `size`x`size` CHW RGB image in [-1, 1].
struct Image<'a> {
    chw: &'a [f32],
    size: usize,
}

impl Image<'_> {
    /// The pixel at (x, y) as a colour in [0, 1].
    fn px(&self, x: usize, y: usize) -> [f32; 3] {
        let plane = self.size * self.size;
        core::array::from_fn(|c| (self.chw[c * plane + y * self.size + x] + 1.0) * 0.5)
    }
}

/// The background colour as one plane `a + b*x + c*y` per channel, `coef[channel] = [a, b, c]`.
struct Background {
    coef: [[f32; 3]; 3],
}

impl Background {
    /// The background colour at a pixel-space point.
    fn at(&self, x: f32, y: f32) -> [f32; 3] {
        let coef = &self.coef;
        core::array::from_fn(|c| coef[c][0] + coef[c][1] * x + coef[c][2] * y)
    }
}

/// Euclidean distance between two colours.
fn colour_distance(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// The background plane fitted to the border pixels, then refitted without the quarter of them
/// that fit worst; and the RMS colour distance of the kept border pixels from it.
fn fit_background(img: &Image) -> (Background, f32) {
    let size = img.size;
    let mut border: Vec<(f32, f32, [f32; 3])> = (0..size)
        .flat_map(|i| [(i, 0), (i, size - 1), (0, i), (size - 1, i)])
        .map(|(x, y)| (x as f32 + 0.5, y as f32 + 0.5, img.px(x, y)))
        .collect();
    let bg = Background { coef: fit_plane(&border) };
    let misfit = |bg: &Background, b: &(f32, f32, [f32; 3])| colour_distance(b.2, bg.at(b.0, b.1));
    border.sort_by(|a, b| misfit(&bg, a).total_cmp(&misfit(&bg, b)));
    border.truncate(border.len() * 3 / 4);
    let bg = Background { coef: fit_plane(&border) };
    let border_rms = (border.iter().map(|b| misfit(&bg, b).powi(2)).sum::<f32>() / border.len().max(1) as f32).sqrt();
    (bg, border_rms)
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

/// Every pixel's colour distance from the background, row-major.
fn distance_map(img: &Image, bg: &Background) -> Vec<f32> {
    let size = img.size;
    let mut d = vec![0f32; size * size];
    for y in 0..size {
        for x in 0..size {
            d[y * size + x] = colour_distance(img.px(x, y), bg.at(x as f32 + 0.5, y as f32 + 0.5));
        }
    }
    d
}

/// The 98th percentile of `d`: the distance of the object, robust to a few outlier pixels.
fn percentile_98(d: &[f32]) -> f32 {
    let plane = d.len();
    let mut sorted = d.to_vec();
    sorted.sort_by(f32::total_cmp);
    sorted[(plane * 98 / 100).min(plane - 1)]
}

/// Foreground colour: mean of the pixels far from the background (at least 0.8 `dmax`).
fn foreground_colour(img: &Image, d: &[f32], dmax: f32) -> [f32; 3] {
    let size = img.size;
    let (mut fg, mut nfg) = ([0f32; 3], 0f32);
    for y in 0..size {
        for x in 0..size {
            if d[y * size + x] >= 0.8 * dmax {
                let p = img.px(x, y);
                for c in 0..3 {
                    fg[c] += p[c];
                }
                nfg += 1.0;
            }
        }
    }
    fg.iter_mut().for_each(|v| *v /= nfg.max(1.0));
    fg
}

/// Soft foreground coverage per pixel, with its total (the area) and first moments.
struct Coverage {
    alpha: Vec<f32>,
    size: usize,
    area: f32,
    moment_x: f32,
    moment_y: f32,
}

impl Coverage {
    /// The coverage-weighted centre (`area` must be positive).
    fn centroid(&self) -> (f32, f32) {
        (self.moment_x / self.area, self.moment_y / self.area)
    }

    /// Bilinear coverage at a pixel-space point; outside the image counts as background.
    fn sample(&self, x: f32, y: f32) -> f32 {
        let size = self.size;
        let (gx, gy) = (x - 0.5, y - 0.5);
        let (x0, y0) = (gx.floor(), gy.floor());
        let (tx, ty) = (gx - x0, gy - y0);
        let at = |xi: f32, yi: f32| {
            if xi < 0.0 || yi < 0.0 || xi >= size as f32 || yi >= size as f32 {
                0.0
            } else {
                self.alpha[yi as usize * size + xi as usize]
            }
        };
        (at(x0, y0) * (1.0 - tx) + at(x0 + 1.0, y0) * tx) * (1.0 - ty)
            + (at(x0, y0 + 1.0) * (1.0 - tx) + at(x0 + 1.0, y0 + 1.0) * tx) * ty
    }
}

/// Coverage of each pixel: its projection from the background colour onto the foreground
/// colour, soft-thresholded around one half.
fn coverage(img: &Image, bg: &Background, fg: [f32; 3]) -> Coverage {
    let size = img.size;
    let mut alpha = vec![0f32; size * size];
    let (mut area, mut cx, mut cy) = (0f32, 0f32, 0f32);
    for y in 0..size {
        for x in 0..size {
            let (fx, fy) = (x as f32 + 0.5, y as f32 + 0.5);
            let bg = bg.at(fx, fy);
            let p = img.px(x, y);
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
    Coverage { alpha, size, area, moment_x: cx, moment_y: cy }
}

/// The directions of the radial profile's rays: cos and sin of `theta_j = j * 2pi / RAYS`.
struct Rays {
    cos: [f32; RAYS],
    sin: [f32; RAYS],
}

impl Rays {
    fn new() -> Rays {
        let (mut cos, mut sin) = ([0f32; RAYS], [0f32; RAYS]);
        for j in 0..RAYS {
            let theta = j as f32 * core::f32::consts::TAU / RAYS as f32;
            (cos[j], sin[j]) = (libm::cosf(theta), libm::sinf(theta));
        }
        Rays { cos, sin }
    }
}

/// The shape's radius r(theta) seen from (cx, cy) along each ray.
fn radial_profile(cov: &Coverage, cx: f32, cy: f32, rays: &Rays) -> [f32; RAYS] {
    core::array::from_fn(|j| boundary_distance(cov, cx, cy, rays.cos[j], rays.sin[j]))
}

/// How far from (cx, cy) the shape's boundary lies in direction (cos, sin), in quarter-pixel
/// steps; 0 when the ray never enters the shape.
///
/// The boundary is where the ray leaves the first inside run for good: outside for a whole
/// pixel (4 samples). Stray noisy pixels further out, or a single dark pixel inside the shape,
/// then do not move it. A ring's ray starts in the hole: its first inside run is the ring itself.
fn boundary_distance(cov: &Coverage, cx: f32, cy: f32, cos: f32, sin: f32) -> f32 {
    let mut radius = 0f32;
    let (mut t, mut entered, mut outside_run) = (0.0f32, false, 0);
    while t < cov.size as f32 * 1.5 {
        if cov.sample(cx + t * cos, cy + t * sin) >= 0.5 {
            entered = true;
            outside_run = 0;
            radius = t;
        } else if entered {
            outside_run += 1;
            if outside_run >= 4 {
                break;
            }
        }
        t += 0.25;
    }
    radius
}

/// The Fourier magnitudes `|F_k| / F0` of the radial profile, for each k in [`HARMONICS`].
fn harmonic_magnitudes(radius: &[f32; RAYS], rays: &Rays, f0: f32) -> [f32; HARMONICS.len()] {
    HARMONICS.map(|k| {
        let (mut re, mut im) = (0f32, 0f32);
        for (j, r) in radius.iter().enumerate() {
            // cos/sin of k*theta_j by index arithmetic: no extra transcendental calls.
            let idx = (k * j) % RAYS;
            re += r * rays.cos[idx];
            im += r * rays.sin[idx];
        }
        (re * re + im * im).sqrt() / f0
    })
}
