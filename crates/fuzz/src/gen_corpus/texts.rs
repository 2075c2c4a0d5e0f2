//! The text seeds (metadata lines, diffusers configurations, `sampler` command lines) and the
//! `.npy` seeds, valid ones and ones each reader check refuses.

use edgediff_io::npy::encode_f32;

/// diffusers' DDIM configuration as `save_config` writes it (the fixtures' schedule).
pub const SCHEDULER_CONFIG: &str = r#"{
  "_class_name": "DDIMScheduler",
  "_diffusers_version": "0.42.1",
  "beta_end": 0.02,
  "beta_schedule": "linear",
  "beta_start": 0.0001,
  "clip_sample": true,
  "clip_sample_range": 1.0,
  "num_train_timesteps": 1000,
  "prediction_type": "epsilon",
  "rescale_betas_zero_snr": false,
  "set_alpha_to_one": true,
  "steps_offset": 0,
  "thresholding": false,
  "timestep_spacing": "leading",
  "trained_betas": null
}
"#;

/// A `UNet2DModel` configuration for the 8x8 RGB seed models.
pub const UNET_CONFIG: &str = r#"{
  "_class_name": "UNet2DModel",
  "_diffusers_version": "0.42.1",
  "block_out_channels": [8, 16],
  "in_channels": 3,
  "num_class_embeds": null,
  "out_channels": 3,
  "sample_size": 8
}
"#;

const META_DEFAULT: &str = "edgediff.format=1\nedgediff.model_name=sprites16-cond\nedgediff.num_train_timesteps=1000\n\
edgediff.beta_schedule=linear\nedgediff.beta_start=0.0001\nedgediff.beta_end=0.02\nedgediff.prediction_type=epsilon\n\
edgediff.image_size=16\nedgediff.channels=3\nedgediff.value_range=-1,1\nedgediff.clip_sample=1\nedgediff.precision=fp32\n\
edgediff.training_steps=20000\nedgediff.class_names=circle,square,triangle,diamond,plus,star,ring\nedgediff.guidance_scale=5\n";

const META_DIFFUSERS: &str = "edgediff.format=1\nedgediff.model_name=vpred\nedgediff.num_train_timesteps=10\n\
edgediff.beta_schedule=linear\nedgediff.beta_start=0.0001\nedgediff.beta_end=0.02\nedgediff.prediction_type=v_prediction\n\
edgediff.image_size=8\nedgediff.channels=1\nedgediff.value_range=0,1\nedgediff.clip_sample=0\nedgediff.precision=int8\n\
edgediff.training_steps=0\nedgediff.trained_betas=0.001,0.002,0.004,0.008,0.01,0.02,0.04,0.08,0.1,0.2\n\
edgediff.rescale_betas_zero_snr=true\nedgediff.dpm_clip_sample=false\nedgediff.class_names=a,b\nedgediff.null_class=none\n\
edgediff.timestep_spacing=trailing\nedgediff.steps_offset=1\nedgediff.set_alpha_to_one=false\n\
edgediff.quantization=form=qoperator; calibration=minmax\n";

const META_COSINE: &str = "edgediff.format=1\nedgediff.model_name=cosine\nedgediff.num_train_timesteps=4000\n\
edgediff.beta_schedule=squaredcos_cap_v2\nedgediff.beta_start=0.00085\nedgediff.beta_end=0.012\n\
edgediff.prediction_type=sample\nedgediff.image_size=32\nedgediff.channels=3\nedgediff.value_range=0,255\n\
edgediff.clip_sample=255\nedgediff.timestep_spacing=linspace\n";

const SCHEDULER_DPM: &str = r#"{"_class_name": "DPMSolverMultistepScheduler", "algorithm_type": "dpmsolver++",
 "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 10,
 "trained_betas": [0.001, 0.002, 0.004, 0.008, 0.01, 0.02, 0.04, 0.08, 0.1, 0.2],
 "prediction_type": "v_prediction", "rescale_betas_zero_snr": true, "solver_order": 2, "solver_type": "midpoint",
 "lower_order_final": true, "use_karras_sigmas": false, "final_sigmas_type": "zero",
 "timestep_spacing": "trailing", "steps_offset": 1}
"#;

const SCHEDULER_DDPM: &str = r#"{"_class_name": "DDPMScheduler", "variance_type": "fixed_small", "clip_sample": false,
 "beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000, "prediction_type": "sample",
 "thresholding": false, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0}
"#;

const SCHEDULER_OTHERS: &str = r#"{"_class_name": "EulerDiscreteScheduler", "interpolation_type": "linear",
 "use_karras_sigmas": false, "timestep_type": "discrete", "sigma_min": null, "sigma_max": null}
"#;

const SCHEDULER_PNDM: &str = r#"{"_class_name": "PNDMScheduler", "skip_prk_steps": true, "set_alpha_to_one": false,
 "steps_offset": 1, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
"#;

const UNET_CLASSES: &str = r#"{"_class_name": "UNet2DModel", "sample_size": [8, 8], "in_channels": 1,
 "out_channels": 1, "num_class_embeds": 3, "class_embed_type": null, "norm_num_groups": 4}
"#;

const MODEL_INDEX: &str = r#"{"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"],
 "unet": ["diffusers", "UNet2DModel"], "vae": null}
"#;

/// `sampler` command lines, one argument per line, using the files `targets::cli` lays out.
const CLI: &[(&str, &str)] = &[
    ("plain", "--steps\n1\n--quiet\nout.png"),
    ("outputs", "--model\nm.onnx\n--steps\n2\n--spacing\ntrailing\n--save-raw\nraw.npy\n--save-init-noise\nx.npy\n--report-json\nr.json\nout.png"),
    ("class", "--steps\n2\n--batch\n2\n--separate\n--class\nstar\n--guidance\n3\n--seed\n7\nout.png"),
    ("init-noise", "--init-noise\nnoise.npy\n--steps\n1\n--scheduler\nddpm\n--eta\n1\nout.png"),
    ("info", "info\n--model\nflat\n--json\n--verbose"),
    ("schedule", "schedule\n--model\nm.onnx\n--scheduler\ndpmpp2m\n--steps\n3\n--json"),
    ("import", "import\nflat\nimported.onnx\n--meta\nmodel_name=x"),
    ("configs", "--model\nm.onnx\n--scheduler-config\nsched.json\n--unet-config\nunet.json\n--steps\n1\n--init-noise\nnoise8.npy\nout.png"),
    ("meta", "--model=m.onnx\n--meta\nprediction_type=v_prediction\n--steps=1\n--upscale\n3\n--set-alpha-to-one\nfalse\nout.png"),
    ("budget", "--steps\n1\n--memory-budget\n64MiB\n--threads\n2\n--verbose\nout.png"),
    ("symlink", "--steps\n1\nlink.png"),
    ("directory", "--steps\n1\ndir"),
    ("same-output", "--steps\n1\n--save-raw\nout.png\nout.png"),
    ("device", "--model\n/dev/zero\n--steps\n1\n--report-json\n/dev/null\nout.png"),
];

/// The text seeds: corpus-relative path and contents.
pub fn text_seeds() -> Vec<(String, String)> {
    let mut seeds: Vec<(String, String)> = [
        ("meta/default.txt", META_DEFAULT),
        ("meta/diffusers-keys.txt", META_DIFFUSERS),
        ("meta/cosine.txt", META_COSINE),
        ("scheduler_config/ddim.json", SCHEDULER_CONFIG),
        ("scheduler_config/dpm.json", SCHEDULER_DPM),
        ("scheduler_config/ddpm.json", SCHEDULER_DDPM),
        ("scheduler_config/euler.json", SCHEDULER_OTHERS),
        ("scheduler_config/pndm.json", SCHEDULER_PNDM),
        ("scheduler_config/unet.json", UNET_CONFIG),
        ("scheduler_config/unet-classes.json", UNET_CLASSES),
        ("scheduler_config/model_index.json", MODEL_INDEX),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_string(), text.to_string()))
    .collect();
    seeds.extend(CLI.iter().map(|(name, text)| (format!("cli/{name}.txt"), text.to_string())));
    seeds
}

/// `.npy` seeds: valid float32 files of several shapes, then one per kind of refusal.
pub fn npy_seeds() -> Vec<(String, Vec<u8>)> {
    let valid = |shape: &[usize]| {
        let n = shape.iter().product();
        encode_f32(&(0..n).map(|i| i as f32 / 7.0 - 1.0).collect::<Vec<_>>(), shape).expect("consistent shape")
    };
    let header = crate::mutate::text::npy_bytes;
    let f4 = |shape: &str, fortran: &str| format!("{{'descr': '<f4', 'fortran_order': {fortran}, 'shape': {shape}, }}");
    let data = vec![0u8; 16];
    vec![
        ("image-1x3x8x8.npy", valid(&[1, 3, 8, 8])),
        ("image-3x4x4.npy", valid(&[3, 4, 4])),
        ("empty-0.npy", valid(&[0])),
        ("scalar.npy", valid(&[])),
        ("version2.npy", header(2, &f4("(2, 2)", "False"), &data)),
        ("version3.npy", header(3, &f4("(4,)", "False"), &data)),
        ("fortran.npy", header(1, &f4("(2, 2)", "True"), &data)),
        ("float64.npy", header(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }", &data)),
        ("big-endian.npy", header(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }", &data)),
        ("short-data.npy", header(1, &f4("(8,)", "False"), &data)),
        ("huge-shape.npy", header(1, &f4("(4294967296, 4294967296)", "False"), &data)),
    ]
    .into_iter()
    .map(|(name, bytes)| (format!("npy/{name}"), bytes))
    .collect()
}
