//! `train export`: a run's EMA weights -> ONNX with edgediff metadata.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use edgediff_train::export::export_onnx;
use edgediff_train::fit::run_files::load_ema;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run directory written by `train fit`.
    #[arg(long, value_name = "RUN_DIR")]
    run: PathBuf,
    /// Output ONNX file.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Model name stored in the metadata [default: the run directory's name].
    #[arg(long)]
    name: Option<String>,
    /// Conditional runs: the guidance scale `sampler --class` uses when no --guidance is given
    /// (stored as `edgediff.guidance_scale`; pick it with `train eval --class all --guidance W`).
    #[arg(long, value_name = "W", allow_negative_numbers = true, value_parser = edgediff_cli::parse::guidance)]
    guidance: Option<f32>,
}

pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let device = Default::default();
    let (ema, state) = load_ema::<burn::backend::Flex>(&args.run, &device)?;
    let cfg = &state.config;
    let name = args.name.clone().unwrap_or_else(|| {
        args.run
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "edgediff".into())
    });
    let mut meta = edgediff_train::reference::meta_from_run(&state, name)?;
    if let Some(w) = args.guidance {
        if meta.class_names.is_empty() {
            anyhow::bail!(
                "--guidance: run {} is not class-conditional (trained without --conditional)",
                args.run.display()
            );
        }
        meta.guidance_scale = Some(w);
    }
    let bytes = export_onnx(&ema, &cfg.model, &meta).context("export failed")?;
    edgediff_io::write_atomic(&args.out, &bytes)?;
    say!(
        "wrote {} ({} bytes): {} parameters, EMA weights after {} steps, {}x{}x{}, {} prediction",
        args.out.display(),
        bytes.len(),
        ema.num_params(),
        meta.training_steps,
        meta.channels,
        meta.image_size,
        meta.image_size,
        meta.schedule.prediction_type
    );
    Ok(())
}
