//! The same bytes for the same image: image k of `--batch N --seed S` is bit for bit the image
//! of `--seed S+k` alone (with and without guidance, fp32 and int8 in either float order), and
//! every kernel this CPU has (`EDGEDIFF_KERNELS`) gives the same final sample as the one
//! detected, fp32 and int8.

use std::path::Path;
use std::process::{Command, Output};

fn sampler(args: &[&str], kernels: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sampler"));
    cmd.args(args).env_remove("EDGEDIFF_KERNELS");
    if let Some(k) = kernels {
        cmd.env("EDGEDIFF_KERNELS", k);
    }
    cmd.output().expect("run sampler")
}

/// The final sample's f32 bits, one vector per image, of a run with `args`.
fn final_images(dir: &Path, name: &str, args: &[&str], kernels: Option<&str>) -> Result<Vec<Vec<u32>>, String> {
    let (raw, png) = (dir.join(format!("{name}.npy")), dir.join(format!("{name}.png")));
    let mut all = vec!["--quiet", "--save-raw", raw.to_str().unwrap()];
    all.extend_from_slice(args);
    all.push(png.to_str().unwrap());
    let o = sampler(&all, kernels);
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let (values, shape) = edgediff_io::npy::read_f32(&raw).map_err(|e| e.to_string())?;
    let per_image = shape[1..].iter().product::<usize>();
    Ok(values.chunks(per_image).map(|c| c.iter().map(|v| v.to_bits()).collect()).collect())
}

#[test]
fn image_k_of_a_batch_is_the_image_of_seed_plus_k_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let int8 = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sprites-cond-int8.onnx");
    let fixed = ["--meta", "float_order=fixed"];
    let cases: [(&str, Vec<&str>); 6] = [
        ("fp32", vec![]),
        ("fp32-guided", vec!["--class", "star", "--guidance", "3"]),
        ("int8-tract-order", vec!["--model", int8]),
        ("int8-tract-order-guided", vec!["--model", int8, "--class", "2", "--guidance", "3"]),
        ("int8", vec!["--model", int8, fixed[0], fixed[1]]),
        ("int8-guided", vec!["--model", int8, fixed[0], fixed[1], "--class", "2", "--guidance", "3"]),
    ];
    for (name, extra) in cases {
        let run = |seed: &str, batch: &str| {
            let mut args = vec!["--steps", "4", "--seed", seed, "--batch", batch];
            args.extend(extra.iter().copied());
            final_images(dir.path(), &format!("{name}-{seed}-{batch}"), &args, None).unwrap()
        };
        let batch = run("10", "3");
        assert_eq!(batch.len(), 3, "{name}: images in the batch");
        for (k, image) in batch.iter().enumerate() {
            let alone = run(&(10 + k).to_string(), "1");
            assert!(&alone[0] == image, "{name}: image {k} of the batch differs from seed {} alone", 10 + k);
        }
    }
}

/// The forced kernel also picks the int8 layers': `avx2` runs them on the AVX2 kernel (as a
/// CPU without any VNNI does), `portable` on tract's own integer convolutions, `neon` as an
/// Armv8.0 CPU without the dot product.
#[test]
fn every_kernel_gives_the_detected_kernels_bytes_fp32_and_int8() {
    let dir = tempfile::tempdir().unwrap();
    // An int8 model in the fixed float order (the default for `train quantize`).
    let int8 = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sprites-eps-int8.onnx");
    for (precision, model) in [("fp32", vec![]), ("int8", vec!["--model", int8])] {
        let mut args = vec!["--steps", "3", "--seed", "5", "--batch", "2"];
        args.extend(model);
        let detected = final_images(dir.path(), &format!("{precision}-detected"), &args, None).unwrap();
        let mut ran = Vec::new();
        for kernel in ["portable", "avx2", "avx512", "neon"] {
            match final_images(dir.path(), &format!("{precision}-{kernel}"), &args, Some(kernel)) {
                Ok(images) => {
                    assert!(images == detected, "{precision}: EDGEDIFF_KERNELS={kernel} changed the final sample");
                    ran.push(kernel);
                }
                // Kernels of another architecture, or an instruction set this CPU lacks.
                Err(e) => {
                    assert!(e.contains("unknown kernel") || e.contains("does not run on this CPU"), "{kernel}: {e}")
                }
            }
        }
        assert!(
            ran.contains(&"portable") && ran.len() >= 2 || !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")),
            "{precision}: ran {ran:?}"
        );
    }
}

/// The pixels of a PNG file (its text chunks name the run: batch size, seed).
fn png_pixels(path: &Path) -> Vec<u8> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    pixels
}

/// `--batch 3 --separate` writes OUT-k.png with the pixels of `--seed S+k` alone, fp32 and int8.
#[test]
fn separate_images_of_a_batch_are_the_images_of_their_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let int8 = concat!(env!("CARGO_MANIFEST_DIR"), "/models/sprites-eps-int8.onnx");
    for (name, model) in [("fp32", vec![]), ("int8", vec!["--model", int8])] {
        let out = dir.path().join(format!("{name}.png"));
        let mut args = vec!["--steps", "3", "--seed", "20", "--batch", "3", "--separate", "--quiet"];
        args.extend(model.iter().copied());
        args.push(out.to_str().unwrap());
        assert!(sampler(&args, None).status.success(), "{name}: batch run");
        for k in 0..3 {
            let alone = dir.path().join(format!("{name}-alone-{k}.png"));
            let seed = (20 + k).to_string();
            let mut args = vec!["--steps", "3", "--seed", &seed, "--quiet"];
            args.extend(model.iter().copied());
            args.push(alone.to_str().unwrap());
            assert!(sampler(&args, None).status.success(), "{name}: seed {seed}");
            let separate = dir.path().join(format!("{name}-{k}.png"));
            assert!(png_pixels(&separate) == png_pixels(&alone), "{name}: image {k} differs from seed {seed} alone");
        }
    }
}

#[test]
fn an_unknown_kernel_name_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let o = sampler(&["--steps", "2", "--quiet", out.to_str().unwrap()], Some("sse9"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !out.exists(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("EDGEDIFF_KERNELS=sse9: unknown kernel `sse9`"), "{err}");
}
