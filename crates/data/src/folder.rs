//! Image-folder dataset: every PNG/JPEG under a folder (recursively), resized so the shorter
//! side equals the model size, centre-cropped to a square, held in memory as CHW f32 in [-1, 1].
//!
//! Labels come from the first sub-folder under the root (`root/cats/x.png` -> `cats`), kept for
//! conditional training later; images directly in the root have no label. Unreadable files are
//! skipped and counted (a training set scraped from disk nearly always has a few), but a folder
//! with nothing readable is an error naming it.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;

use super::DataError;

/// One decoded, resized image.
#[derive(Debug, Clone)]
pub struct FolderImage {
    /// CHW RGB in [-1, 1].
    pub pixels: Vec<f32>,
    /// Index into [`FolderDataset::class_names`], `None` for images in the root itself.
    pub label: Option<usize>,
}

#[derive(Debug, Clone)]
pub struct FolderDataset {
    pub root: PathBuf,
    pub size: usize,
    pub images: Vec<FolderImage>,
    /// Sorted names of the sub-folders that held images.
    pub class_names: Vec<String>,
    /// Files with an image extension that could not be decoded: (path, reason).
    pub skipped: Vec<(PathBuf, String)>,
}

fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
}

/// All image files under `dir`, sorted so the dataset order (and so training) is reproducible.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::Io { path: dir.to_path_buf(), source: e })?;
    for entry in entries {
        let entry = entry.map_err(|e| DataError::Io { path: dir.to_path_buf(), source: e })?;
        let path = entry.path();
        // file_type() does not follow symlinks; metadata() does, so linked folders are walked.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => collect_files(&path, out)?,
            Ok(m) if m.is_file() && has_image_extension(&path) => out.push(path),
            _ => {}
        }
    }
    Ok(())
}

/// Decodes one file and brings it to `size`x`size` (shorter side resized, centre crop).
pub fn load_image(path: &Path, size: usize) -> Result<Vec<f32>, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err("empty image".into());
    }
    let s = size as u32;
    // Scale so the shorter side is `size`; the longer side rounds up so the crop always fits.
    let (nw, nh) = if w <= h {
        (s, ((h as u64 * s as u64).div_ceil(w as u64)) as u32)
    } else {
        (((w as u64 * s as u64).div_ceil(h as u64)) as u32, s)
    };
    let resized = image::imageops::resize(&img, nw, nh, FilterType::Triangle);
    let (x0, y0) = ((nw - s) / 2, (nh - s) / 2);
    let plane = size * size;
    let mut out = vec![0.0f32; 3 * plane];
    for y in 0..size {
        for x in 0..size {
            let p = resized.get_pixel(x0 + x as u32, y0 + y as u32);
            for c in 0..3 {
                out[c * plane + y * size + x] = p[c] as f32 / 127.5 - 1.0;
            }
        }
    }
    Ok(out)
}

impl FolderDataset {
    /// Loads every readable image under `root` at `size`x`size`.
    pub fn load(root: &Path, size: usize) -> Result<FolderDataset, DataError> {
        if !root.is_dir() {
            return Err(DataError::NotAFolder(root.to_path_buf()));
        }
        let mut files = Vec::new();
        collect_files(root, &mut files)?;
        files.sort();
        if files.is_empty() {
            return Err(DataError::NoImages(root.to_path_buf()));
        }
        let label_of = |path: &Path| -> Option<String> {
            let rel = path.strip_prefix(root).ok()?;
            let mut parts = rel.components();
            let first = parts.next()?;
            // Only a directory component counts: a file in the root has a single component.
            parts.next().map(|_| first.as_os_str().to_string_lossy().into_owned())
        };
        let mut class_names: Vec<String> = files.iter().filter_map(|p| label_of(p)).collect();
        class_names.sort();
        class_names.dedup();
        let mut images = Vec::new();
        let mut skipped = Vec::new();
        let mut used = vec![false; class_names.len()];
        for path in files {
            match load_image(&path, size) {
                Ok(pixels) => {
                    let label = label_of(&path).and_then(|n| class_names.binary_search(&n).ok());
                    if let Some(l) = label {
                        used[l] = true;
                    }
                    images.push(FolderImage { pixels, label });
                }
                Err(reason) => skipped.push((path, reason)),
            }
        }
        if images.is_empty() {
            return Err(DataError::NoneReadable { folder: root.to_path_buf(), skipped: skipped.len() });
        }
        // Drop classes whose every file was unreadable, renumbering the labels.
        if used.iter().any(|u| !u) {
            let remap: Vec<Option<usize>> = used
                .iter()
                .scan(0usize, |next, &u| {
                    Some(u.then(|| {
                        *next += 1;
                        *next - 1
                    }))
                })
                .collect();
            for img in &mut images {
                img.label = img.label.and_then(|l| remap[l]);
            }
            class_names = class_names.into_iter().zip(&used).filter(|(_, u)| **u).map(|(n, _)| n).collect();
        }
        Ok(FolderDataset { root: root.to_path_buf(), size, images, class_names, skipped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
        img.save(path).unwrap();
    }

    #[test]
    fn loads_resizes_crops_labels_and_skips() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b_red")).unwrap();
        std::fs::create_dir(dir.path().join("a_blue")).unwrap();
        std::fs::create_dir(dir.path().join("c_broken")).unwrap();
        // Wide image: left half black, right half white; the centre crop keeps both halves.
        write_png(&dir.path().join("root.png"), 64, 32, |x, _| if x < 32 { [0; 3] } else { [255; 3] });
        write_png(&dir.path().join("b_red/r.png"), 20, 40, |_, _| [255, 0, 0]);
        write_png(&dir.path().join("a_blue/b.PNG"), 8, 8, |_, _| [0, 0, 255]);
        std::fs::write(dir.path().join("c_broken/x.jpg"), b"not a jpeg").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"ignored").unwrap();

        let ds = FolderDataset::load(dir.path(), 16).unwrap();
        assert_eq!(ds.images.len(), 3);
        assert_eq!(ds.skipped.len(), 1);
        assert_eq!(ds.class_names, vec!["a_blue", "b_red"]);
        let blue = &ds.images[0];
        assert_eq!(blue.label, Some(0));
        assert!((blue.pixels[2 * 256] - 1.0).abs() < 1e-6 && (blue.pixels[0] + 1.0).abs() < 1e-6);
        let red = &ds.images[1];
        assert_eq!(red.label, Some(1));
        assert!(red.pixels[..256].iter().all(|&v| (v - 1.0).abs() < 1e-6));
        let root = &ds.images[2];
        assert_eq!(root.label, None);
        assert!(root.pixels[0] < -0.9 && root.pixels[15] > 0.9, "centre crop keeps both halves");
    }

    #[test]
    fn empty_and_unreadable_folders_are_errors_naming_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let e = FolderDataset::load(dir.path(), 8).unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()), "{e}");
        std::fs::write(dir.path().join("bad.png"), b"\x89PNG garbage").unwrap();
        let e = FolderDataset::load(dir.path(), 8).unwrap_err().to_string();
        assert!(e.contains(&dir.path().display().to_string()) && e.contains("1"), "{e}");
    }
}
