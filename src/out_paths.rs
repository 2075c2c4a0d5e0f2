//! The run's files checked before any work: every output can be written where it is named,
//! replaces nothing that is not ours (see `edgediff_io::check_destination`), and is neither
//! another output of the run nor one of its inputs (`sampler --model m.onnx m.onnx` must not
//! turn the model into a PNG).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgediff_cli::UsageError;
use edgediff_io::same_file;
use edgediff_runtime::source::ModelFiles;

use crate::cli::GenerateArgs;

/// Checks the outputs of `args` (the image `out`, written as `out-K.png` with `--separate`)
/// against each other and the inputs.
pub fn check(args: &GenerateArgs, out: &Path) -> Result<()> {
    let outputs = outputs(args, out);
    for (flag, path) in &outputs {
        check_writable(path).with_context(|| flag.clone())?;
    }
    for (i, (flag, path)) in outputs.iter().enumerate() {
        if let Some((other, _)) = outputs[..i].iter().find(|(_, p)| same_file(p, path)) {
            return Err(UsageError(format!(
                "{other} and {flag} both name {}: give each output its own file",
                path.display()
            ))
            .into());
        }
        if let Some((input, _)) = inputs(args).iter().find(|(_, p)| same_file(p, path)) {
            return Err(UsageError(format!(
                "{flag} {} is the {input} input: refusing to overwrite an input",
                path.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// Every file the run writes, with the flag (or argument) that names it.
fn outputs(args: &GenerateArgs, out: &Path) -> Vec<(String, PathBuf)> {
    let images: Vec<PathBuf> = if args.batch > 1 && args.separate {
        (0..args.batch as usize).map(|k| crate::generate::numbered(out, k)).collect()
    } else {
        vec![out.to_path_buf()]
    };
    let mut all: Vec<(String, PathBuf)> = images.into_iter().map(|p| ("OUT".to_string(), p)).collect();
    let flags = [
        ("--save-raw", &args.save_raw),
        ("--save-init-noise", &args.save_init_noise),
        ("--report-json", &args.report_json),
    ];
    all.extend(flags.into_iter().filter_map(|(flag, p)| Some((flag.to_string(), p.clone()?))));
    all
}

/// Every file the run reads, with the flag that names it: the model's files (a folder's
/// configuration files included), the configuration flags' and x_T's.
fn inputs(args: &GenerateArgs) -> Vec<(&'static str, PathBuf)> {
    let mut all = Vec::new();
    if let Some(files) = args.model.model.as_deref().and_then(|m| ModelFiles::discover(m).ok()) {
        all.push(("--model", files.onnx));
        all.extend(
            [files.unet_config, files.scheduler_config, files.model_index]
                .into_iter()
                .flatten()
                .map(|p| ("--model", p)),
        );
    }
    let describe = &args.model.describe;
    let flags = [
        ("--scheduler-config", &describe.scheduler_config),
        ("--unet-config", &describe.unet_config),
        ("--init-noise", &args.init_noise),
    ];
    all.extend(flags.into_iter().filter_map(|(flag, p)| Some((flag, p.clone()?))));
    all
}

/// Fails early, before any work, when `path` cannot be written: its folder is missing or not
/// writable, or the path is something other than a regular file of ours.
fn check_writable(path: &Path) -> Result<()> {
    edgediff_io::check_destination(path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let probe = tempfile::Builder::new()
        .prefix(".edgediff-write-probe")
        .tempfile_in(&dir)
        .with_context(|| format!("{}: cannot write to directory {}", path.display(), dir.display()))?;
    drop(probe);
    Ok(())
}
