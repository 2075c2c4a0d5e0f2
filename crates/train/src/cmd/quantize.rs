//! `train quantize IN.onnx OUT.onnx`: int8 weights, calibrated uint8 activations.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use edgediff_cli::{bad_input, UsageError};
use edgediff_core::meta::FloatOrder;
use edgediff_quantize::{
    quantize, ActivationType, CalibrationOptions, QuantForm, QuantizeError, QuantizeOptions, RangeRule, TargetPolicy,
};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// fp32 edgediff model (from `train export`).
    #[arg(value_name = "IN.onnx")]
    input: PathBuf,
    /// Where to write the int8 model.
    #[arg(value_name = "OUT.onnx")]
    output: PathBuf,
    /// ONNX form: `integer` (ConvInteger/MatMulInteger, int32 result scaled straight to f32:
    /// the fastest and most accurate int8 form in tract), `qoperator` (QLinearConv/QLinearMatMul)
    /// or `qdq` (QuantizeLinear/DequantizeLinear around float ops; tract turns the weights back
    /// into f32, so it saves no memory there).
    #[arg(long, default_value = "integer", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<QuantForm>()))]
    form: QuantForm,
    /// Activation storage: `u8` (asymmetric, zero point) or `i8` (symmetric, zero point 0).
    #[arg(long, default_value = "u8", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<ActivationType>()))]
    activations: ActivationType,
    /// Images in the calibration batch (each a whole DDIM trajectory).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    calib_images: u64,
    /// DDIM steps per calibration trajectory; every step's activations are observed.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    calib_steps: u64,
    /// Range of each activation: `minmax` (the extremes over all steps), `mse` (the min/max
    /// range clipped where that lowers the expected squared quantisation error over a histogram
    /// of every step's values; one more pass) or `mean` (mean over steps of each step's min/max;
    /// clips the early steps' large values wholesale, measured worse on diffusion models).
    #[arg(long, default_value = "minmax", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<RangeRule>()))]
    range: RangeRule,
    /// Seed of the calibration noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Nodes to leave in fp32, comma separated, each by its ONNX node name (e.g. `conv_out/Conv`)
    /// or by the name of a tensor it writes (nodes may have no name).
    #[arg(long, value_delimiter = ',', value_name = "NODES")]
    keep_fp32: Vec<String>,
    /// Also quantise the first conv and the output layer (fp32 by default: see the model card).
    #[arg(long)]
    quantize_io: bool,
    /// Also quantise layers that read a Concat directly (a U-Net's up-path skip convs; fp32 by
    /// default: their one activation scale spans both concatenated halves, see the model card).
    #[arg(long)]
    quantize_concat_inputs: bool,
    /// Sweeps of bias correction (`--form integer`): layer by layer, each int8 layer's mean
    /// output error per channel, measured against the fp32 model on the calibration
    /// trajectories, is subtracted from its bias. Off by default (0); 1 raised the default
    /// model's PSNR vs fp32 (worst seed 42.9 -> 45.0 dB) but not its FD (see the model card).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10))]
    bias_correction: u64,
    /// Smooth each int8 layer's input activation with strength ALPHA in [0, 1] (SmoothQuant):
    /// each channel divided by a factor before the per-tensor quantisation, the weights reading
    /// it multiplied by it. Off by default.
    #[arg(long, value_name = "ALPHA")]
    smooth: Option<f32>,
    /// How the runtime computes the int8 model's float layers: `fixed` (our one order, the same
    /// bytes on every CPU) or `tract` (tract's per-CPU kernels, the arithmetic
    /// `models/sprites-cond-int8.onnx` was measured with). Written as `edgediff.float_order`.
    #[arg(long, default_value = "fixed", value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<FloatOrder>()))]
    float_order: FloatOrder,
}

/// Refuses, before any work, an output that is the input (the model would be replaced by its
/// own int8 file, or lost if quantisation failed half way) or that is not ours to replace.
fn check_paths(args: &QuantizeArgs) -> anyhow::Result<()> {
    if edgediff_io::same_file(&args.input, &args.output) {
        return Err(UsageError(format!(
            "IN {} and OUT {} name the same file: write the int8 model to another file",
            args.input.display(),
            args.output.display()
        ))
        .into());
    }
    edgediff_io::check_destination(&args.output)?;
    Ok(())
}

/// The library's options from the flags.
fn options(args: &QuantizeArgs) -> QuantizeOptions {
    QuantizeOptions {
        form: args.form,
        activations: args.activations,
        calibration: CalibrationOptions {
            rule: args.range,
            images: args.calib_images as usize,
            steps: args.calib_steps as usize,
            seed: args.seed,
        },
        policy: TargetPolicy {
            skip: args.keep_fp32.iter().cloned().collect::<HashSet<_>>(),
            quantize_io: args.quantize_io,
            quantize_concat_inputs: args.quantize_concat_inputs,
        },
        bias_correction_sweeps: args.bias_correction as usize,
        smoothing: args.smooth,
        float_order: args.float_order,
    }
}

/// `e` as the command reports it: a model that cannot be quantised is bad input (exit 2), an
/// unknown `--keep-fp32` name a usage error (exit 2), anything else a failure of the run.
fn quantize_error(input: &Path, e: QuantizeError) -> anyhow::Error {
    if matches!(e, QuantizeError::UnknownKeep(_)) {
        return UsageError(e.to_string()).into();
    }
    if e.is_bad_input() {
        return bad_input(&input.display().to_string(), e);
    }
    anyhow::Error::new(e).context(format!("cannot quantise {}", input.display()))
}

pub fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    check_paths(&args)?;
    if let Some(alpha) = args.smooth.filter(|a| !(0.0..=1.0).contains(a)) {
        return Err(UsageError(format!("--smooth: expected a strength in [0, 1], got {alpha}")).into());
    }
    let bytes = edgediff_runtime::source::read_model(&args.input, None)
        .map_err(|e| bad_input(&args.input.display().to_string(), e))?;
    let bar = ProgressBar::new(args.calib_steps);
    bar.set_style(
        ProgressStyle::with_template("calibrating {bar:30} trajectory step {pos}/{len} {elapsed}<{eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = quantize(&bytes, &options(&args), |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let q = result.map_err(|e| quantize_error(&args.input, e))?;
    edgediff_io::write_atomic(&args.output, &q.bytes)?;
    let convs = q.targets.iter().filter(|t| t.kind == edgediff_quantize::TargetKind::Conv).count();
    say!(
        "wrote {} ({} bytes, was {}): {} Conv + {} MatMul nodes int8 ({})",
        args.output.display(),
        q.bytes.len(),
        bytes.len(),
        convs,
        q.targets.len() - convs,
        q.description
    );
    if !q.clipped_spans.is_empty() {
        let mut kept = q.clipped_spans.clone();
        kept.sort_by(f32::total_cmp);
        say!(
            "clipping: {} of {} ranges narrowed; share of the min/max span kept: median {:.1}%, least {:.1}%",
            kept.iter().filter(|&&k| k < 1.0).count(),
            kept.len(),
            100.0 * kept[kept.len() / 2],
            100.0 * kept[0]
        );
    }
    if !q.bias_correction.max_mean_error.is_empty() {
        let errors: Vec<String> = q.bias_correction.max_mean_error.iter().map(|e| format!("{e:.2e}")).collect();
        say!(
            "bias correction: {} biases; largest mean channel error found in each sweep {}",
            q.bias_correction.layers,
            errors.join(", ")
        );
    }
    Ok(())
}
