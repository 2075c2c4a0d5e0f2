//! The shipped int8 model against the shipped fp32 model it was quantised from: same x_T, 50
//! DDIM steps, 16 seeds, PSNR of the final images (over the value range). Thresholds are the
//! levels measured when the int8 model was made (issue 4 asks for >= 35 dB median); they may
//! only ever be raised.

use std::collections::BTreeMap;
use std::path::PathBuf;

use edgediff_core::{PredictionType, SchedulerConfig, SchedulerKind, Spacing};
use edgediff_runtime::{sample, EpsModel, SampleRequest};

const SEEDS: usize = 16;
const MEDIAN_PSNR_DB: f64 = 41.5;
const MIN_PSNR_DB: f64 = 37.0;

fn final_images(file: &str) -> (Vec<f32>, (f32, f32), usize) {
    let bytes = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models").join(file)).expect(file);
    let model = EpsModel::from_onnx_bytes(&bytes, &BTreeMap::new()).expect(file);
    let meta = model.meta.clone();
    let mut net = model.into_network(SEEDS, 2).expect("plan");
    let request = SampleRequest {
        seed: 0,
        scheduler: SchedulerConfig {
            kind: SchedulerKind::Ddim,
            num_inference_steps: 50,
            spacing: Spacing::Leading,
            steps_offset: 0,
            eta: 0.0,
            set_alpha_to_one: true,
            clip_sample: meta.clip_sample,
            prediction_type: meta.prediction_type,
        },
        init_noise: None,
        class_labels: None,
        guidance: None,
        memory_budget: None,
    };
    assert_eq!(meta.prediction_type, PredictionType::Epsilon);
    (sample(&mut net, &request, |_| ()).expect("sampling").x0, meta.value_range, meta.image_len())
}

#[test]
fn int8_default_model_stays_close_to_fp32() {
    let (fp32, range, per_image) = final_images("sprites-eps.onnx");
    let (int8, _, _) = final_images("sprites-eps-int8.onnx");
    let peak = (range.1 - range.0) as f64;
    let mut psnr: Vec<f64> = fp32
        .chunks(per_image)
        .zip(int8.chunks(per_image))
        .map(|(a, b)| {
            let mse = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>() / per_image as f64;
            10.0 * (peak * peak / mse).log10()
        })
        .collect();
    psnr.sort_by(f64::total_cmp);
    let median = (psnr[SEEDS / 2 - 1] + psnr[SEEDS / 2]) / 2.0;
    eprintln!(
        "int8 vs fp32 over seeds 0..{SEEDS}: median {median:.2} dB, min {:.2} dB, max {:.2} dB",
        psnr[0],
        psnr[SEEDS - 1]
    );
    assert!(median >= MEDIAN_PSNR_DB, "median PSNR {median:.2} dB < {MEDIAN_PSNR_DB} dB");
    assert!(psnr[0] >= MIN_PSNR_DB, "worst seed PSNR {:.2} dB < {MIN_PSNR_DB} dB", psnr[0]);
}
