//! Training data: the procedural `sprites` set or a folder of images, drawn as batches that are
//! a pure function of (seed, step) so resumed training sees exactly the same data.

pub mod folder;
pub mod rng;
pub mod shape_check;
pub mod sprites;

use std::path::{Path, PathBuf};

pub use folder::FolderDataset;
pub use sprites::{sprite, SPRITE_CLASSES};

use rng::{mix, Stream};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("data folder {0} does not exist or is not a folder")]
    NotAFolder(PathBuf),
    #[error("data folder {0} contains no PNG or JPEG images")]
    NoImages(PathBuf),
    #[error("data folder {folder}: none of its {skipped} image file(s) could be decoded")]
    NoneReadable { folder: PathBuf, skipped: usize },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("image size must be between 4 and 1024, got {0}")]
    BadSize(usize),
}

/// Where training images come from.
#[derive(Debug, Clone)]
pub enum Dataset {
    /// Endless procedural sprites rendered at `size`.
    Sprites { size: usize },
    /// A finite set of images held in memory.
    Folder(FolderDataset),
}

/// A batch in NCHW order, ready to upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    /// Class label per image (`None` where the source has none).
    pub labels: Vec<Option<usize>>,
}

/// The one word that selects the procedural set; anything else is a folder path.
pub const SPRITES: &str = "sprites";

impl Dataset {
    /// `spec` is `sprites` or a folder path (write `./sprites` for a folder called sprites).
    pub fn open(spec: &str, size: usize) -> Result<Dataset, DataError> {
        if !(4..=1024).contains(&size) {
            return Err(DataError::BadSize(size));
        }
        if spec == SPRITES {
            Ok(Dataset::Sprites { size })
        } else {
            Ok(Dataset::Folder(FolderDataset::load(Path::new(spec), size)?))
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Dataset::Sprites { size } => *size,
            Dataset::Folder(f) => f.size,
        }
    }

    pub fn class_names(&self) -> Vec<String> {
        match self {
            Dataset::Sprites { .. } => SPRITE_CLASSES.iter().map(|s| s.to_string()).collect(),
            Dataset::Folder(f) => f.class_names.clone(),
        }
    }

    /// One line for the console.
    pub fn describe(&self) -> String {
        match self {
            Dataset::Sprites { size } => {
                format!("sprites: endless procedural {size}x{size}, {} classes", SPRITE_CLASSES.len())
            }
            Dataset::Folder(f) => {
                let mut s = format!(
                    "{}: {} images at {}x{}, {} classes",
                    f.root.display(),
                    f.images.len(),
                    f.size,
                    f.size,
                    f.class_names.len()
                );
                if !f.skipped.is_empty() {
                    s += &format!(
                        ", {} unreadable file(s) skipped (first: {}: {})",
                        f.skipped.len(),
                        f.skipped[0].0.display(),
                        f.skipped[0].1
                    );
                }
                s
            }
        }
    }

    /// Image `k` of the stream for `seed`. Sprites: sprite k. Folder: position `k % N` of a
    /// per-epoch shuffle seeded by (seed, epoch), horizontally flipped on a coin seeded by
    /// (seed, k) - the usual DDPM augmentation, which doubles a small folder's variety.
    pub fn example(&self, seed: u64, k: u64) -> (Vec<f32>, Option<usize>) {
        match self {
            Dataset::Sprites { size } => {
                let (img, class) = sprite(seed, k, *size);
                (img, Some(class))
            }
            Dataset::Folder(f) => {
                let n = f.images.len() as u64;
                let perm = epoch_permutation(seed, k / n, n as usize);
                let img = &f.images[perm[(k % n) as usize]];
                let mut pixels = img.pixels.clone();
                if Stream::new(mix(&[seed, k, 0x464C_4950])).next_u64() & 1 == 1 {
                    flip_horizontal(&mut pixels, f.size);
                }
                (pixels, img.label)
            }
        }
    }

    /// Batch `step` of the stream for `seed`: images `step*batch .. (step+1)*batch`.
    pub fn batch(&self, seed: u64, step: u64, batch: usize) -> Batch {
        let mut images = Vec::with_capacity(batch * 3 * self.size() * self.size());
        let mut labels = Vec::with_capacity(batch);
        for i in 0..batch as u64 {
            let (img, label) = self.example(seed, step * batch as u64 + i);
            images.extend_from_slice(&img);
            labels.push(label);
        }
        Batch { images, labels }
    }
}

/// Fisher-Yates shuffle of 0..n seeded by (seed, epoch).
fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut perm: Vec<usize> = (0..n).collect();
    let mut s = Stream::new(mix(&[seed, epoch, 0x5045_524D]));
    for i in (1..n).rev() {
        perm.swap(i, s.below(i as u64 + 1) as usize);
    }
    perm
}

fn flip_horizontal(chw: &mut [f32], size: usize) {
    for row in chw.chunks_mut(size) {
        row.reverse();
    }
}

/// Converts CHW [-1, 1] images into one grid picture, `cols` per row, 1-pixel grey gaps.
pub fn grid_image(images: &[Vec<f32>], size: usize, cols: usize) -> image::RgbImage {
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols).max(1);
    let cell = size as u32 + 1;
    let mut out = image::RgbImage::from_pixel(cols as u32 * cell + 1, rows as u32 * cell + 1, image::Rgb([128; 3]));
    let plane = size * size;
    for (n, img) in images.iter().enumerate() {
        let (ox, oy) = ((n % cols) as u32 * cell + 1, (n / cols) as u32 * cell + 1);
        for y in 0..size {
            for x in 0..size {
                let px = core::array::from_fn(|c| to_u8(img[c * plane + y * size + x]));
                out.put_pixel(ox + x as u32, oy + y as u32, image::Rgb(px));
            }
        }
    }
    out
}

/// [-1, 1] -> 0..255, rounding to nearest, clamping out-of-range values.
pub fn to_u8(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// Encodes a PNG in memory and writes it atomically.
pub fn write_png_atomic(img: &image::RgbImage, path: &Path) -> Result<(), DataError> {
    let mut bytes = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .map_err(|e| DataError::Write { path: path.to_path_buf(), reason: e.to_string() })?;
    edgediff_io::write_atomic(path, &bytes)
        .map_err(|e| DataError::Write { path: path.to_path_buf(), reason: e.message })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_pure_functions_of_seed_and_step() {
        let ds = Dataset::open(SPRITES, 8).unwrap();
        let b = ds.batch(5, 3, 4);
        assert_eq!(b, ds.batch(5, 3, 4));
        assert_ne!(b.images, ds.batch(5, 4, 4).images);
        assert_eq!(b.images.len(), 4 * 3 * 64);
        // Image 1 of step 3 is stream element 13.
        assert_eq!(&b.images[192..384], &ds.example(5, 13).0[..]);
    }

    #[test]
    fn epoch_permutation_visits_everything_once() {
        let mut p = epoch_permutation(1, 2, 50);
        assert_ne!(p, (0..50).collect::<Vec<_>>());
        p.sort();
        assert_eq!(p, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn bad_size_is_an_error() {
        assert!(matches!(Dataset::open(SPRITES, 2), Err(DataError::BadSize(2))));
    }
}
