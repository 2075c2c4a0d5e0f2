//! The result of `train eval`, as a small text table or as JSON.

use serde_json::json;

/// One sprite class's share among the generated images the shape checker recognised.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassShare {
    pub name: String,
    pub samples: usize,
    pub share_of_recognised: f64,
    /// The same share among the real reference sprites (about 1/7 each).
    pub real_share: f64,
}

/// Shape-checker results (sprites only).
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeReport {
    /// Share of generated images in which the checker finds a sprite shape.
    pub recognised: f64,
    /// The same on the real reference set (the checker's ceiling) and on noise (its floor).
    pub real_recognised: f64,
    pub noise_recognised: f64,
    /// Total variation distance between the generated and the real class distributions
    /// (among recognised images): 0 = same shares, 1 = no class in common. Catches mode
    /// collapse, which FD sees only weakly.
    pub class_distance: f64,
    pub classes: Vec<ClassShare>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EvalReport {
    pub data: String,
    pub size: usize,
    /// Images per set (generated, real A, real B, blurred, noise).
    pub count: usize,
    pub seed: u64,
    pub feature_space: &'static str,
    pub feature_dim: usize,
    /// FD of the generated samples vs real set A.
    pub fd_samples: f64,
    /// Real set B vs A: the floor.
    pub fd_floor: f64,
    pub fd_blurred: f64,
    /// Gaussian noise vs A: the ceiling.
    pub fd_noise: f64,
    pub shapes: Option<ShapeReport>,
    pub seconds_features: f64,
    pub seconds_fd: f64,
}

impl EvalReport {
    /// `fd` as a multiple of the floor (real vs real); 1 = as good as real data at this N.
    pub fn ratio_to_floor(&self, fd: f64) -> f64 {
        if self.fd_floor > 0.0 {
            fd / self.fd_floor
        } else {
            f64::NAN
        }
    }

    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "Frechet distance, {} features ({}-d), N = {} per set, {}x{}, real = {} (seed {})\n",
            self.feature_space, self.feature_dim, self.count, self.size, self.size, self.data, self.seed
        );
        s += &format!("  {:<28} {:>12} {:>9}\n", "set vs real", "FD", "x floor");
        let rows = [
            ("real, disjoint (floor)", self.fd_floor),
            ("generated samples", self.fd_samples),
            ("blurred real (sigma 1px)", self.fd_blurred),
            ("Gaussian noise (ceiling)", self.fd_noise),
        ];
        for (name, fd) in rows {
            s += &format!("  {name:<28} {fd:>12.4} {:>9.2}\n", self.ratio_to_floor(fd));
        }
        if let Some(sh) = &self.shapes {
            s += &format!(
                "shape checker: finds a shape in {:.1}% of generated samples (real {:.1}%, noise {:.1}%); class distribution distance to real {:.3} (0 = same, 1 = disjoint)\n",
                100.0 * sh.recognised,
                100.0 * sh.real_recognised,
                100.0 * sh.noise_recognised,
                sh.class_distance
            );
            s += &format!("  {:<10} {:>8} {:>10} {:>8}\n", "class", "samples", "generated", "real");
            for c in &sh.classes {
                s += &format!(
                    "  {:<10} {:>8} {:>9.1}% {:>7.1}%\n",
                    c.name,
                    c.samples,
                    100.0 * c.share_of_recognised,
                    100.0 * c.real_share
                );
            }
        }
        s += &format!("time: features {:.1} s, FD {:.1} s\n", self.seconds_features, self.seconds_fd);
        s
    }

    /// Machine-readable form (`--json`). Non-finite numbers become `null`.
    pub fn to_json(&self) -> serde_json::Value {
        let shapes = self.shapes.as_ref().map(|sh| {
            json!({
                "recognised": sh.recognised,
                "real_recognised": sh.real_recognised,
                "noise_recognised": sh.noise_recognised,
                "class_distance": sh.class_distance,
                "classes": sh.classes.iter().map(|c| json!({
                    "name": c.name,
                    "samples": c.samples,
                    "share_of_recognised": c.share_of_recognised,
                    "real_share": c.real_share,
                })).collect::<Vec<_>>(),
            })
        });
        json!({
            "data": self.data,
            "image_size": self.size,
            "count": self.count,
            "seed": self.seed,
            "feature_space": self.feature_space,
            "feature_dim": self.feature_dim,
            "fd": {
                "samples": self.fd_samples,
                "floor_real_vs_real": self.fd_floor,
                "blurred_real": self.fd_blurred,
                "noise": self.fd_noise,
            },
            "ratio_to_floor": {
                "samples": finite(self.ratio_to_floor(self.fd_samples)),
                "blurred_real": finite(self.ratio_to_floor(self.fd_blurred)),
                "noise": finite(self.ratio_to_floor(self.fd_noise)),
            },
            "shapes": shapes,
            "seconds": { "features": self.seconds_features, "fd": self.seconds_fd },
        })
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}
