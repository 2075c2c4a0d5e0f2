//! The trainer → runtime metadata contract (`meta.rs`): what is written is read back, and
//! every malformed key is an error that names it.

use std::collections::BTreeMap;

use edgediff_core::meta::{self, FloatOrder, ModelMeta, Precision};
use edgediff_core::{BetaSchedule, CoreError, ModelSchedule, PredictionType};

fn sample_meta() -> ModelMeta {
    ModelMeta {
        model_name: "sprites-v-16".into(),
        schedule: ModelSchedule {
            num_train_timesteps: 1000,
            beta_schedule: BetaSchedule::ScaledLinear,
            beta_start: 0.00085,
            beta_end: 0.012,
            trained_betas: None,
            rescale_betas_zero_snr: false,
            dpm_clip_sample: true,
            prediction_type: PredictionType::VPrediction,
            clip_sample: Some(1.0),
        },
        image_size: 16,
        channels: 3,
        value_range: (-1.0, 1.0),
        precision: Precision::Fp32,
        training_steps: 20000,
        class_names: vec!["circle".into(), "square".into()],
        has_null_class: true,
        guidance_scale: Some(2.5),
        sampling: Default::default(),
        float_order: Default::default(),
    }
}

#[test]
fn props_round_trip() {
    let m = sample_meta();
    let props = m.to_props();
    assert_eq!(props[meta::BETA_SCHEDULE], "scaled_linear");
    assert_eq!(props[meta::PREDICTION_TYPE], "v_prediction");
    assert_eq!(props[meta::BETA_START], "0.00085");
    assert_eq!(ModelMeta::from_props(&props).unwrap(), m);
    assert_eq!(m.image_len(), 3 * 16 * 16);

    let mut plain = m.clone();
    plain.schedule.clip_sample = None;
    plain.class_names.clear();
    plain.guidance_scale = None;
    let props = plain.to_props();
    assert!(!props.contains_key(meta::CLASS_NAMES));
    assert!(!props.contains_key(meta::GUIDANCE_SCALE));
    assert_eq!(props[meta::CLIP_SAMPLE], "0");
    assert_eq!(ModelMeta::from_props(&props).unwrap(), plain);
    assert!(!props.contains_key(meta::FLOAT_ORDER), "the fixed order is the default: no key");

    let tract = ModelMeta { float_order: FloatOrder::Tract, ..m };
    let props = tract.to_props();
    assert_eq!(props[meta::FLOAT_ORDER], "tract");
    assert_eq!(ModelMeta::from_props(&props).unwrap(), tract);
}

#[test]
fn missing_and_malformed_keys_are_named() {
    let good = sample_meta().to_props();
    let with = |key: &str, value: Option<&str>| {
        let mut p: BTreeMap<String, String> = good.clone();
        match value {
            Some(v) => p.insert(key.to_string(), v.to_string()),
            None => p.remove(key),
        };
        ModelMeta::from_props(&p).unwrap_err()
    };
    assert_eq!(with(meta::NUM_TRAIN_TIMESTEPS, None), CoreError::MissingMetadata(meta::NUM_TRAIN_TIMESTEPS));
    assert!(matches!(with(meta::CHANNELS, Some("2")), CoreError::BadMetadata { key: meta::CHANNELS, .. }));
    assert!(matches!(with(meta::VALUE_RANGE, Some("1,-1")), CoreError::BadMetadata { key: meta::VALUE_RANGE, .. }));
    assert!(matches!(with(meta::FORMAT, Some("2")), CoreError::BadMetadata { key: meta::FORMAT, .. }));
    assert!(matches!(with(meta::IMAGE_SIZE, Some("0")), CoreError::BadMetadata { key: meta::IMAGE_SIZE, .. }));
    assert!(matches!(with(meta::PRECISION, Some("fp16")), CoreError::BadMetadata { key: meta::PRECISION, .. }));
    assert!(matches!(with(meta::FLOAT_ORDER, Some("fast")), CoreError::BadMetadata { key: meta::FLOAT_ORDER, .. }));
    let err = with(meta::BETA_SCHEDULE, Some("cosine"));
    assert!(matches!(err, CoreError::BadMetadata { key: meta::BETA_SCHEDULE, .. }), "{err}");
    assert!(err.to_string().contains("cosine") && err.to_string().contains("squaredcos_cap_v2"), "{err}");
    for bad in ["-1", "NaN", "inf", "strong"] {
        let err = with(meta::GUIDANCE_SCALE, Some(bad));
        assert!(matches!(err, CoreError::BadMetadata { key: meta::GUIDANCE_SCALE, .. }), "{bad}: {err}");
    }
    let err = with(meta::PREDICTION_TYPE, Some("noise"));
    assert!(matches!(err, CoreError::BadMetadata { key: meta::PREDICTION_TYPE, .. }), "{err}");
}
