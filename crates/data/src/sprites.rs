//! The `sprites` procedural dataset: one anti-aliased shape on a two-colour gradient.
//!
//! Endless and seeded: sample `index` of seed `seed` is a pure function of `(seed, index, size)`
//! (no state, no files), which is what makes resumed training exact and lets any sample be
//! re-rendered later (e.g. to check what a model was shown). Rendering happens at the model's
//! resolution with 4x4 supersampling, and uses `libm` for sin/cos so the bytes are the same on
//! x86_64 and aarch64.
//!
//! The shapes are chosen to stay distinguishable under any rotation (the "diamond" is an
//! elongated rhombus, not a rotated square), so a class label is always recoverable from the
//! picture: that is what `shape_check` relies on.

use super::rng::{mix, Stream};

/// Class names, index = class label.
pub const SPRITE_CLASSES: [&str; 7] = ["circle", "square", "triangle", "diamond", "plus", "star", "ring"];

/// Samples per pixel side (4x4 = 16 coverage samples per pixel).
const SUPERSAMPLE: usize = 4;

/// A shape in its own frame: circumradius 1, centred at the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Diamond,
    Plus,
    Star,
    Ring,
}

impl Shape {
    pub const ALL: [Shape; 7] =
        [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Diamond, Shape::Plus, Shape::Star, Shape::Ring];

    pub fn from_class(class: usize) -> Option<Shape> {
        Shape::ALL.get(class).copied()
    }

    pub fn name(self) -> &'static str {
        SPRITE_CLASSES[self as usize]
    }

    /// Whether the local point (u, v) lies inside the shape.
    fn contains(self, u: f32, v: f32) -> bool {
        let r2 = u * u + v * v;
        match self {
            Shape::Circle => r2 <= 1.0,
            // Half side 0.78: a little inside the unit circle so the area looks like the circle's.
            Shape::Square => u.abs() <= 0.78 && v.abs() <= 0.78,
            // Equilateral, circumradius 1, edges as three half-planes.
            Shape::Triangle => v >= -0.5 && SQRT3 * u + v <= 1.0 && -SQRT3 * u + v <= 1.0,
            // Rhombus with half-diagonals 1 and 0.55: never looks like a square.
            Shape::Diamond => u.abs() + v.abs() / 0.55 <= 1.0,
            Shape::Plus => (u.abs() <= 0.3 && v.abs() <= 0.95) || (v.abs() <= 0.3 && u.abs() <= 0.95),
            Shape::Star => in_polygon(&STAR, u, v),
            Shape::Ring => (0.3025..=1.0).contains(&r2), // inner radius 0.55
        }
    }
}

const SQRT3: f32 = 1.732_050_8;

/// Five-pointed star, outer radius 1, inner radius 0.45, first point up.
/// Precomputed (not derived at run time) so no transcendental enters the geometry.
const STAR: [(f32, f32); 10] = [
    (0.0, 1.0),
    (0.264_503_1, 0.364_058_3),
    (0.951_056_5, 0.309_017),
    (0.427_975_4, -0.139_057_7),
    (0.587_785_3, -0.809_017),
    (0.0, -0.45),
    (-0.587_785_3, -0.809_017),
    (-0.427_975_4, -0.139_057_7),
    (-0.951_056_5, 0.309_017),
    (-0.264_503_1, 0.364_058_3),
];

/// Even-odd crossing test.
fn in_polygon(poly: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut inside = false;
    let mut j = poly.len() - 1;
    for i in 0..poly.len() {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// Everything random about one sprite, drawn from its own stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SpriteParams {
    pub shape: Shape,
    /// Circumradius, in pixels.
    pub radius: f32,
    /// Centre, in pixels (x right, y down).
    pub centre: (f32, f32),
    pub angle: f32,
    pub fg: [f32; 3],
    pub bg: [[f32; 3]; 2],
    /// Unit direction of the background gradient.
    pub gradient_dir: (f32, f32),
}

fn colour(s: &mut Stream) -> [f32; 3] {
    [s.uniform(), s.uniform(), s.uniform()]
}

fn dist(a: [f32; 3], b: [f32; 3]) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

impl SpriteParams {
    /// Draws the parameters of sample `index` of `seed` for a `size`x`size` image.
    pub fn draw(seed: u64, index: u64, size: usize) -> SpriteParams {
        let mut s = Stream::new(mix(&[0x5350_5249_5445, seed, index]));
        let shape = Shape::ALL[s.below(Shape::ALL.len() as u64) as usize];
        let n = size as f32;
        let radius = n * s.range(0.22, 0.40);
        // Keep one pixel of background all round: the border is what shape_check fits.
        let margin = radius + 1.0;
        let centre = (s.range(margin, n - margin), s.range(margin, n - margin));
        let angle = s.range(0.0, core::f32::consts::TAU);
        let bg = [colour(&mut s), colour(&mut s)];
        // Rejection-sample a foreground that stands out from both background colours; the
        // attempt count is bounded so this is total, and the last draw is kept if all fail.
        let mut fg = colour(&mut s);
        for _ in 0..32 {
            if dist(fg, bg[0]) > 0.45 && dist(fg, bg[1]) > 0.45 {
                break;
            }
            fg = colour(&mut s);
        }
        let g = s.range(0.0, core::f32::consts::TAU);
        let gradient_dir = (libm::cosf(g), libm::sinf(g));
        SpriteParams { shape, radius, centre, angle, fg, bg, gradient_dir }
    }

    /// Background colour at pixel-space point (x, y): linear in x and y (no clamping), so the
    /// border of an image determines the whole background exactly.
    pub fn background(&self, x: f32, y: f32, size: usize) -> [f32; 3] {
        let n = size as f32;
        let half_diag = n * core::f32::consts::FRAC_1_SQRT_2;
        let d = (x - n / 2.0) * self.gradient_dir.0 + (y - n / 2.0) * self.gradient_dir.1;
        let t = 0.5 + 0.5 * d / half_diag;
        core::array::from_fn(|c| self.bg[0][c] + (self.bg[1][c] - self.bg[0][c]) * t)
    }

    /// Fraction of pixel (px, py) covered by the shape (4x4 supersampling).
    fn coverage(&self, px: usize, py: usize) -> f32 {
        let (sin, cos) = (libm::sinf(self.angle), libm::cosf(self.angle));
        let mut hits = 0u32;
        for sy in 0..SUPERSAMPLE {
            for sx in 0..SUPERSAMPLE {
                let x = px as f32 + (sx as f32 + 0.5) / SUPERSAMPLE as f32 - self.centre.0;
                let y = py as f32 + (sy as f32 + 0.5) / SUPERSAMPLE as f32 - self.centre.1;
                // Rotate into the shape's frame (y flipped so "up" is up), scale to radius 1.
                let u = (cos * x + sin * y) / self.radius;
                let v = (sin * x - cos * y) / self.radius;
                hits += self.shape.contains(u, v) as u32;
            }
        }
        hits as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32
    }

    /// Renders CHW RGB in [-1, 1].
    pub fn render(&self, size: usize) -> Vec<f32> {
        let plane = size * size;
        let mut out = vec![0.0f32; 3 * plane];
        for py in 0..size {
            for px in 0..size {
                let cov = self.coverage(px, py);
                let bg = self.background(px as f32 + 0.5, py as f32 + 0.5, size);
                for c in 0..3 {
                    let v = bg[c] + (self.fg[c] - bg[c]) * cov;
                    out[c * plane + py * size + px] = v * 2.0 - 1.0;
                }
            }
        }
        out
    }
}

/// Sample `index` of seed `seed`: (CHW RGB image in [-1, 1], class label into [`SPRITE_CLASSES`]).
pub fn sprite(seed: u64, index: u64, size: usize) -> (Vec<f32>, usize) {
    let p = SpriteParams::draw(seed, index, size);
    (p.render(size), p.shape as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pure_function_of_seed_and_index() {
        let a = sprite(3, 17, 16);
        assert_eq!(a, sprite(3, 17, 16));
        assert_ne!(a.0, sprite(3, 18, 16).0);
        assert_ne!(a.0, sprite(4, 17, 16).0);
        assert_eq!(a.0.len(), 3 * 16 * 16);
        assert!(a.0.iter().all(|v| (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn every_class_appears_and_is_antialiased() {
        let mut seen = [0usize; 7];
        let mut partial = 0;
        for i in 0..700 {
            let p = SpriteParams::draw(1, i, 32);
            seen[p.shape as usize] += 1;
            partial += (0..32 * 32)
                .filter(|&k| {
                    let c = p.coverage(k % 32, k / 32);
                    c > 0.0 && c < 1.0
                })
                .count();
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        assert!(partial > 700 * 20, "edges should be partially covered: {partial}");
    }

    #[test]
    fn star_polygon_is_the_described_star() {
        for (k, &(x, y)) in STAR.iter().enumerate() {
            let r = (x * x + y * y).sqrt();
            let want = if k % 2 == 0 { 1.0 } else { 0.45 };
            assert!((r - want).abs() < 1e-5, "vertex {k} radius {r}");
            let angle = libm::atan2f(x, y); // clockwise from up
            let want_angle = k as f32 * core::f32::consts::PI / 5.0;
            let d = (angle - want_angle).rem_euclid(core::f32::consts::TAU);
            assert!(d < 1e-5 || (core::f32::consts::TAU - d) < 1e-5, "vertex {k} angle");
        }
    }
}
