//! The image sets `train eval` compares: generated samples read from `.npy` or PNG files, two
//! disjoint held-out real sets, and the reference degradations (blur, pure noise).
//!
//! Every set passes through 8-bit quantisation (what a PNG stores), so the float samples of a
//! `.npy` file and the PNGs the sampler wrote from them score exactly the same.

use std::path::{Path, PathBuf};

use edgediff_core::GaussianStream;

use edgediff_data::rng::{mix, Stream};
use edgediff_data::sprites::SpriteParams;
use edgediff_data::{to_u8, Dataset, SPRITES};

use super::EvalError;

/// `count` images, each CHW of `channels` x `size` x `size`, values in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub channels: usize,
    pub size: usize,
    pub data: Vec<f32>,
}

impl ImageSet {
    pub fn per_image(&self) -> usize {
        self.channels * self.size * self.size
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.per_image().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.data[i * self.per_image()..(i + 1) * self.per_image()]
    }

    /// The first `n` images.
    pub fn truncated(mut self, n: usize) -> ImageSet {
        self.data.truncate(n * self.per_image());
        self
    }

    /// Rounds every value to the nearest of the 256 levels a PNG can hold (clamping to [-1, 1]).
    pub fn quantised(mut self) -> ImageSet {
        self.data.iter_mut().for_each(|v| *v = to_u8(*v) as f32 / 127.5 - 1.0);
        self
    }
}

/// Reads generated samples: a float32 `.npy` of shape `[N, C, H, W]` or `[C, H, W]` (as the
/// sampler's `--save-raw` writes), or a directory of PNGs (all the same size; natural order, so
/// `x-2.png` precedes `x-10.png`). At most `limit` images are kept.
pub fn load_samples(path: &Path, limit: usize) -> Result<ImageSet, EvalError> {
    let meta =
        std::fs::metadata(path).map_err(|e| EvalError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
    let set = if meta.is_dir() {
        load_png_dir(path, limit)?
    } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        load_npy(path)?
    } else {
        return Err(EvalError::Read {
            path: path.to_path_buf(),
            reason: "expected a .npy file or a directory of PNGs".into(),
        });
    };
    Ok(set.truncated(limit))
}

fn load_npy(path: &Path) -> Result<ImageSet, EvalError> {
    let (data, shape) = edgediff_io::npy::read_f32(path)
        .map_err(|e| EvalError::Read { path: path.to_path_buf(), reason: e.message })?;
    let (c, h, w) = match shape[..] {
        [_, c, h, w] | [c, h, w] => (c, h, w),
        _ => {
            return Err(EvalError::Read {
                path: path.to_path_buf(),
                reason: format!("shape {shape:?}: expected [N, C, H, W] or [C, H, W]"),
            })
        }
    };
    if h != w || !(c == 1 || c == 3) {
        return Err(EvalError::Read {
            path: path.to_path_buf(),
            reason: format!("shape {shape:?}: expected square images with 1 or 3 channels"),
        });
    }
    Ok(ImageSet { channels: c, size: h, data })
}

/// Splits a file name into text and number runs so that numbers compare by value.
fn natural_key(name: &str) -> Vec<(String, u128)> {
    let mut key = Vec::new();
    let mut chars = name.chars().peekable();
    while chars.peek().is_some() {
        let text: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_ascii_digit())).collect();
        let digits: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_digit())).collect();
        key.push((text, digits.parse().unwrap_or(u128::MAX)));
    }
    key
}

fn load_png_dir(dir: &Path, limit: usize) -> Result<ImageSet, EvalError> {
    let read_err = |path: &Path, reason: String| EvalError::Read { path: path.to_path_buf(), reason };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| read_err(dir, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && p.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })
        .collect();
    if files.is_empty() {
        return Err(read_err(dir, "the directory holds no .png files".into()));
    }
    files.sort_by_cached_key(|p| {
        natural_key(&p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())
    });
    files.truncate(limit);
    let mut set: Option<ImageSet> = None;
    for file in &files {
        let img = image::ImageReader::open(file)
            .map_err(|e| read_err(file, e.to_string()))?
            .decode()
            .map_err(|e| read_err(file, format!("cannot decode: {e}")))?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        let grey = !img.color().has_color();
        let (c, bytes) = if grey { (1, img.into_luma8().into_raw()) } else { (3, img.into_rgb8().into_raw()) };
        let set = set.get_or_insert_with(|| ImageSet { channels: c, size: w, data: Vec::new() });
        if w != h || w != set.size || c != set.channels {
            return Err(read_err(
                file,
                format!("{w}x{h} with {c} channel(s), but the first image is {0}x{0} with {1}", set.size, set.channels),
            ));
        }
        let plane = w * h;
        let start = set.data.len();
        set.data.resize(start + c * plane, 0.0);
        for (p, px) in bytes.chunks_exact(c).enumerate() {
            for (ch, &b) in px.iter().enumerate() {
                set.data[start + ch * plane + p] = b as f32 / 127.5 - 1.0;
            }
        }
    }
    set.ok_or_else(|| read_err(dir, "the directory holds no .png files".into()))
}

/// Two disjoint held-out real sets of `count` images each, from `data` (`sprites`: sprites
/// `0..count` and `count..2*count` of `seed`; a folder: a seeded shuffle split in two halves,
/// smaller if the folder has fewer than `2*count` images).
pub fn real_sets(data: &str, size: usize, count: usize, seed: u64) -> Result<(ImageSet, ImageSet), EvalError> {
    let ds = Dataset::open(data, size)?;
    let to_set = |images: Vec<Vec<f32>>| ImageSet { channels: 3, size, data: images.concat() }.quantised();
    match &ds {
        Dataset::Sprites { .. } => {
            let a = (0..count as u64).map(|k| ds.example(seed, k).0).collect();
            let b = (count as u64..2 * count as u64).map(|k| ds.example(seed, k).0).collect();
            Ok((to_set(a), to_set(b)))
        }
        Dataset::Folder(f) => {
            let order = shuffled_order(f.images.len(), seed);
            let half = count.min(order.len() / 2);
            let pick = |r: &[usize]| r.iter().map(|&i| f.images[i].pixels.clone()).collect();
            Ok((to_set(pick(&order[..half])), to_set(pick(&order[half..2 * half]))))
        }
    }
}

/// `0..n` in a seeded Fisher–Yates order: how a folder's images are split into held-out sets.
fn shuffled_order(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut s = Stream::new(mix(&[seed, 0x4556_414C]));
    for i in (1..n).rev() {
        order.swap(i, s.below(i as u64 + 1) as usize);
    }
    order
}

/// Like [`real_sets`], restricted to the images of class `class` (sprites: the next sprites
/// of `seed` with that shape; a folder: that sub-folder's images, the same seeded shuffle split
/// in two halves). The images are kept in stream order, so the sets are reproducible.
pub fn real_sets_of_class(
    data: &str,
    size: usize,
    count: usize,
    seed: u64,
    class: usize,
) -> Result<(ImageSet, ImageSet), EvalError> {
    let ds = Dataset::open(data, size)?;
    let classes = ds.class_names();
    if class >= classes.len() {
        return Err(EvalError::Invalid(format!("{data} has {} classes, there is no class {class}", classes.len())));
    }
    let to_set = |images: Vec<Vec<f32>>| ImageSet { channels: 3, size, data: images.concat() }.quantised();
    match &ds {
        Dataset::Sprites { .. } => {
            // Draw the parameters only (cheap) and render the sprites of the class.
            let picked: Vec<Vec<f32>> = (0u64..)
                .map(|k| SpriteParams::draw(seed, k, size))
                .filter(|p| p.shape as usize == class)
                .take(2 * count)
                .map(|p| p.render(size))
                .collect();
            let b = picked[count..].to_vec();
            Ok((to_set(picked[..count].to_vec()), to_set(b)))
        }
        Dataset::Folder(f) => {
            let mut order = shuffled_order(f.images.len(), seed);
            order.retain(|&i| f.images[i].label == Some(class));
            let half = count.min(order.len() / 2);
            let pick = |r: &[usize]| r.iter().map(|&i| f.images[i].pixels.clone()).collect();
            Ok((to_set(pick(&order[..half])), to_set(pick(&order[half..2 * half]))))
        }
    }
}

/// Whether `data` names the procedural sprites (the shape checker applies).
pub fn is_sprites(data: &str) -> bool {
    data == SPRITES
}

/// Gaussian blur with the binomial kernel [1 4 6 4 1]/16 (sigma = 1 pixel) along both axes,
/// edges replicated: real images with their fine detail removed.
pub fn blurred(set: &ImageSet) -> ImageSet {
    const K: [f32; 5] = [1.0 / 16.0, 4.0 / 16.0, 6.0 / 16.0, 4.0 / 16.0, 1.0 / 16.0];
    let s = set.size;
    let at = |i: isize| i.clamp(0, s as isize - 1) as usize;
    let mut out = set.clone();
    for plane in out.data.chunks_mut(s * s) {
        let mut tmp = vec![0f32; s * s];
        for y in 0..s {
            for x in 0..s {
                tmp[y * s + x] = (0..5).map(|k| K[k] * plane[y * s + at(x as isize + k as isize - 2)]).sum();
            }
        }
        for y in 0..s {
            for x in 0..s {
                plane[y * s + x] = (0..5).map(|k| K[k] * tmp[at(y as isize + k as isize - 2) * s + x]).sum();
            }
        }
    }
    out.quantised()
}

/// `count` images of standard Gaussian noise, clamped to [-1, 1]: what an untrained model's
/// x_T looks like, the worst a sampler can do.
pub fn noise_images(channels: usize, size: usize, count: usize, seed: u64) -> ImageSet {
    let mut data = vec![0f32; count * channels * size * size];
    GaussianStream::new(mix(&[seed, 0x4E_4F49_5345])).fill(&mut data);
    ImageSet { channels, size, data }.quantised()
}

/// The set as 3-channel images (grey replicated), as the feature extractor expects.
pub fn as_rgb(set: &ImageSet) -> Vec<f32> {
    if set.channels == 3 {
        return set.data.clone();
    }
    set.data.chunks_exact(set.per_image()).flat_map(|img| img.iter().chain(img).chain(img).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_sorts_numbers_by_value() {
        let mut names = vec!["s-10.png", "s-2.png", "s-1.png", "a.png"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, vec!["a.png", "s-1.png", "s-2.png", "s-10.png"]);
    }

    #[test]
    fn blur_keeps_flat_images_and_softens_edges() {
        let flat = ImageSet { channels: 3, size: 8, data: vec![0.5; 3 * 64] }.quantised();
        assert_eq!(blurred(&flat), flat);
        let mut step = vec![-1.0f32; 64];
        step.iter_mut().enumerate().filter(|(i, _)| i % 8 >= 4).for_each(|(_, v)| *v = 1.0);
        let b = blurred(&ImageSet { channels: 1, size: 8, data: step });
        assert!(b.data[3] > -1.0 && b.data[3] < 0.0 && b.data[4] > 0.0 && b.data[4] < 1.0, "{:?}", &b.data[..8]);
        assert_eq!(b.data[0], -1.0);
    }

    #[test]
    fn class_real_sets_hold_only_that_class() {
        let (a, b) = real_sets_of_class(SPRITES, 16, 6, 3, 4).unwrap();
        assert_eq!((a.len(), b.len()), (6, 6));
        assert_ne!(a.image(0), b.image(0));
        // The first sprite of class 4 (plus) in the stream of seed 3 is image 0 of set A.
        let first = (0u64..).map(|k| SpriteParams::draw(3, k, 16)).find(|p| p.shape as usize == 4).unwrap();
        let want = ImageSet { channels: 3, size: 16, data: first.render(16) }.quantised();
        assert_eq!(a.image(0), want.image(0));
        assert!(real_sets_of_class(SPRITES, 16, 6, 3, 7).is_err());
    }

    #[test]
    fn real_sets_are_disjoint_and_reproducible() {
        let (a, b) = real_sets(SPRITES, 16, 10, 3).unwrap();
        assert_eq!((a.len(), b.len()), (10, 10));
        assert_ne!(a.image(0), b.image(0));
        assert_eq!(real_sets(SPRITES, 16, 10, 3).unwrap().0, a);
    }
}
