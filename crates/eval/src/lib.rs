//! `train eval`: how close are generated images to the real data? One number, the Frechet
//! distance (FD) between N generated and N held-out real images in a fixed feature space,
//! always printed beside a floor and ceilings measured the same way, so it can be read.
//!
//! # Definition
//!
//! Features `f(x)` (329 numbers per image, see [`features`]): per-channel colour mean, standard
//! deviation and cross-channel covariances, plus the spatial mean and standard deviation of
//! every channel of a fixed, seeded, untrained 3-layer ReLU convolutional network (32/64/64
//! channels, 2x2 average pooling between layers). Fit a Gaussian (mean mu, covariance S, N-1
//! normalised) to the features of each set, then
//!
//! `FD = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 (S_r^1/2 S_g S_r^1/2)^1/2)`
//!
//! computed in f64 with a symmetric (Jacobi) eigendecomposition. All images are quantised to 8
//! bits first. The reference is real set A (`N` held-out images: for sprites, sprites `0..N` of
//! `--seed`, a seed no training run uses by default). Reported beside it:
//! - floor: real set B (the next `N` sprites, disjoint from A) vs A. Not 0: a finite sample
//!   leaves FD with a positive bias that grows with dimension and shrinks with N; a generator
//!   cannot be expected to beat it. Compare numbers only at equal N.
//! - blurred real: set B blurred (sigma = 1 px) vs A: right colours and layout, lost detail.
//! - ceiling: Gaussian noise images (N(0,1) clamped) vs A: an untrained model.
//!
//! Each FD is also shown as a multiple of the floor (`x floor`): about 1 is as close to the
//! real data as another real sample of the same size. For `--data sprites` the sprite shape
//! checker (`data::shape_check`) also classifies every sample: the class distribution and its
//! total-variation distance to the real one show mode collapse, which FD sees only mildly (one
//! class instead of seven: about 2x floor). The checker's "found a shape" share is *not* a
//! quality score: it names a class for nearly any foreground blob (an early 16x16 model whose
//! samples are coloured blobs scored 99.4%), only blank and noise images get no class.
//!
//! Limits: the features are local (receptive field up to ~18 px, then pooled over the whole
//! image), so they judge colour, sharpness, texture and how much structure there is, not
//! global shape organisation; that early model scored 24x floor, no worse than blur (16x at
//! 16x16), mostly through its wrong colours.
//!
//! # Why this feature space
//!
//! FID's Inception-v3 features need a 92 MB download of ImageNet weights and a Python/torch or
//! ONNX runtime of them; this tool must work offline, in pure Rust, deterministically, and on
//! 16x16 to 64x64 images that Inception (299x299 input, ImageNet classes) was never meant for.
//! Untrained ("random") convolutional networks are known to give usable embeddings for
//! distribution metrics outside ImageNet's domain (Naeem et al. 2020, "Reliable fidelity and
//! diversity metrics for generative models", evaluate randomly initialised networks for exactly
//! this reason): random filters with ReLU measure how much of many local patterns (edges,
//! blobs, colour contrasts at 1, 2 and 4 pixels) an image contains, so blur, noise, wrong
//! colours, missing shapes and mode collapse (a too-narrow covariance) all move the Gaussian.
//! Measured on sprites at 32x32 with N = 500: floor 0.0115, another seed's real sprites 0.0106,
//! blurred 0.140 (12x floor), noise 37.5 (3250x); with N = 300, sprites without their shape
//! score 74x floor, grey sprites 37x, circles only 2x (`tests/eval.rs`). The first-layer
//! filters are zero-sum so they see structure rather than colour level: with plain random
//! filters blur scored only 1.3x floor. Numbers are comparable only with each other (same N,
//! same feature space [`features::FEATURE_SPACE`]), never with published FIDs.

pub mod conditional;
pub mod features;
pub mod frechet;
pub mod generate;
pub mod images;
pub mod linalg;
pub mod report;

use std::path::PathBuf;
use std::time::Instant;

use edgediff_data::shape_check::ShapeChecker;
use edgediff_data::{DataError, SPRITE_CLASSES};

use features::FeatureExtractor;
use frechet::{Gaussian, Reference};
use images::ImageSet;
pub use report::{ClassShare, EvalReport, ShapeReport};

/// Fewer images than this make a covariance estimate meaningless.
pub const MIN_COUNT: usize = 10;
/// Default seed of the held-out real images ("EVAL"); training runs default to seed 0.
pub const DEFAULT_EVAL_SEED: u64 = 0x4556_414C;

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("{0}")]
    Invalid(String),
}

/// What to compare against.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// `sprites` or an image folder.
    pub data: String,
    /// At most this many images per set.
    pub count: usize,
    /// Seed of the held-out real images (and of the noise set).
    pub seed: u64,
    /// Threads for feature extraction (results do not depend on it).
    pub threads: usize,
}

/// Scores `samples` (RGB, values in [-1, 1]) against the real data of `opts`.
pub fn evaluate(samples: &ImageSet, opts: &EvalOptions) -> Result<EvalReport, EvalError> {
    evaluate_against(samples, opts, None)
}

/// Scores `samples` against the real images of one class of `opts.data` only (the held-out
/// real sets are drawn from that class): how well a class-conditional model draws the class.
pub fn evaluate_class(samples: &ImageSet, opts: &EvalOptions, class: usize) -> Result<EvalReport, EvalError> {
    evaluate_against(samples, opts, Some(class))
}

/// Scores `samples` against the held-out real sets of `opts.data`, of one class when `class` is
/// given.
fn evaluate_against(samples: &ImageSet, opts: &EvalOptions, class: Option<usize>) -> Result<EvalReport, EvalError> {
    let n = usable_sample_count(samples, opts)?;
    let size = samples.size;
    let (real_a, real_b) = match class {
        None => images::real_sets(&opts.data, size, n, opts.seed)?,
        Some(c) => images::real_sets_of_class(&opts.data, size, n, opts.seed, c)?,
    };
    let n = n.min(real_a.len());
    if n < MIN_COUNT {
        return Err(EvalError::Invalid(format!(
            "{}{}: only {} held-out image(s) per set; FD needs at least {MIN_COUNT} (the folder needs {} images)",
            opts.data,
            class.map(|c| format!(", class {c}")).unwrap_or_default(),
            real_a.len(),
            2 * MIN_COUNT
        )));
    }
    let generated = samples.clone().truncated(n).quantised();
    let blurred = images::blurred(&real_b);
    let noise = images::noise_images(3, size, n, opts.seed);

    let started = Instant::now();
    let fx = FeatureExtractor::new();
    let gaussian = |set: &ImageSet| Gaussian::fit(&fx.extract_all(&images::as_rgb(set), size, opts.threads), fx.dim());
    let (g_real_a, g_real_b, g_gen, g_blur, g_noise) =
        (gaussian(&real_a), gaussian(&real_b), gaussian(&generated), gaussian(&blurred), gaussian(&noise));
    let seconds_features = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let reference = Reference::new(g_real_a);
    let fd_samples = reference.distance(&g_gen);
    let fd_floor = reference.distance(&g_real_b);
    let fd_blurred = reference.distance(&g_blur);
    let fd_noise = reference.distance(&g_noise);
    let seconds_fd = started.elapsed().as_secs_f64();

    let shapes = images::is_sprites(&opts.data).then(|| shape_report(&generated, &real_a, &noise));
    Ok(EvalReport {
        data: opts.data.clone(),
        size,
        count: n,
        seed: opts.seed,
        feature_space: features::FEATURE_SPACE,
        feature_dim: fx.dim(),
        fd_samples,
        fd_floor,
        fd_blurred,
        fd_noise,
        shapes,
        seconds_features,
        seconds_fd,
    })
}

/// How many of `samples` to score: at most `opts.count`, and at least [`MIN_COUNT`]; an error
/// unless they are RGB of a size the feature extractor takes.
fn usable_sample_count(samples: &ImageSet, opts: &EvalOptions) -> Result<usize, EvalError> {
    if samples.channels != 3 {
        return Err(EvalError::Invalid(format!(
            "samples have {} channel(s); the real data is RGB (3 channels)",
            samples.channels
        )));
    }
    if !(4..=1024).contains(&samples.size) {
        return Err(EvalError::Invalid(format!("samples are {0}x{0}: expected 4..=1024 pixels", samples.size)));
    }
    let n = samples.len().min(opts.count);
    if n < MIN_COUNT {
        return Err(EvalError::Invalid(format!(
            "{n} sample(s): FD needs at least {MIN_COUNT} (use more samples or a larger --count)"
        )));
    }
    Ok(n)
}

/// Runs the sprite shape checker over the generated set, and over the real and noise sets
/// for scale.
fn shape_report(generated: &ImageSet, real: &ImageSet, noise: &ImageSet) -> ShapeReport {
    let checker = ShapeChecker::new(generated.size);
    let classes = |set: &ImageSet| {
        let mut counts = vec![0usize; SPRITE_CLASSES.len()];
        for i in 0..set.len() {
            if let Some(v) = checker.classify(set.image(i)) {
                counts[v.class] += 1;
            }
        }
        counts
    };
    let (gen_counts, real_counts, noise_counts) = (classes(generated), classes(real), classes(noise));
    let share = |k: usize, n: usize| k as f64 / n.max(1) as f64;
    let gen_total: usize = gen_counts.iter().sum();
    let real_total: usize = real_counts.iter().sum();
    let class_distance = 0.5
        * gen_counts
            .iter()
            .zip(&real_counts)
            .map(|(&g, &r)| (share(g, gen_total) - share(r, real_total)).abs())
            .sum::<f64>();
    ShapeReport {
        class_distance,
        recognised: share(gen_total, generated.len()),
        real_recognised: share(real_total, real.len()),
        noise_recognised: share(noise_counts.iter().sum(), noise.len()),
        classes: SPRITE_CLASSES
            .iter()
            .enumerate()
            .map(|(c, name)| ClassShare {
                name: name.to_string(),
                samples: gen_counts[c],
                share_of_recognised: share(gen_counts[c], gen_total),
                real_share: share(real_counts[c], real_total),
            })
            .collect(),
    }
}
