//! `train dataset`: describe a dataset, write a preview grid, measure the shape checker.

use std::path::PathBuf;

use clap::Args;

use edgediff_data::shape_check::{ShapeChecker, REFERENCE_SEED};
use edgediff_data::{grid_image, write_png_atomic, Dataset, SPRITES, SPRITE_CLASSES};

#[derive(Args, Debug)]
pub struct DatasetArgs {
    /// `sprites` or a folder of PNG/JPEG images.
    #[arg(long, value_name = "sprites|DIR", default_value = SPRITES)]
    data: String,
    /// Write a grid of the first --count training images to this PNG.
    #[arg(long, value_name = "PNG")]
    preview: Option<PathBuf>,
    /// Image side in pixels (the model size).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(4..=1024))]
    size: u64,
    /// Images in the preview grid (or sprites in --check-shapes).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    count: u64,
    /// Seed of the data stream (as `train fit --seed`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Measure the sprite shape checker's accuracy on --count held-out sprites.
    #[arg(long)]
    check_shapes: bool,
    /// With --check-shapes: add Gaussian noise of this std (pixel scale [-1, 1]) to the sprites.
    #[arg(long, default_value_t = 0.0)]
    noise: f32,
}

pub fn run(args: DatasetArgs) -> anyhow::Result<()> {
    let size = args.size as usize;
    let ds = Dataset::open(&args.data, size)?;
    say!("{}", ds.describe());
    if let Some(path) = &args.preview {
        let images: Vec<Vec<f32>> = (0..args.count).map(|k| ds.example(args.seed, k).0).collect();
        let cols = (images.len() as f64).sqrt().ceil() as usize;
        write_png_atomic(&grid_image(&images, size, cols), path)?;
        say!("wrote {} ({} images, seed {})", path.display(), images.len(), args.seed);
    }
    if args.check_shapes {
        let seed = if args.seed == REFERENCE_SEED { args.seed + 1 } else { args.seed };
        let checker = ShapeChecker::new(size);
        let (acc, confusion) = checker.accuracy(seed, args.count, args.noise.max(0.0));
        say!(
            "shape checker at {size}x{size}: {:.1}% correct on {} held-out sprites (seed {seed}, noise std {})",
            acc * 100.0,
            args.count,
            args.noise
        );
        say!("{:>10} {}      none", "true\\pred", SPRITE_CLASSES.map(|c| format!("{c:>9}")).join(""));
        for (c, row) in confusion.iter().enumerate() {
            let cells: String = row.iter().map(|n| format!("{n:>9}")).collect();
            say!("{:>10} {cells}", SPRITE_CLASSES[c]);
        }
    }
    Ok(())
}
