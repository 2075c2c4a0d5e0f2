//! Network values to 8-bit pixels: the model's `value_range` maps linearly onto 0..=255.

use edgediff_core::meta::ModelMeta;

/// One image, CHW floats in the model's value range, to interleaved HWC bytes (grey or RGB).
/// Rounds to nearest and clamps, with plain f32 arithmetic so every CPU gives the same bytes.
pub fn to_pixels(image: &[f32], meta: &ModelMeta) -> Vec<u8> {
    let (c, s) = (meta.channels, meta.image_size);
    let (lo, hi) = meta.value_range;
    let scale = 255.0 / (hi - lo);
    let plane = s * s;
    let mut out = vec![0u8; c * plane];
    for p in 0..plane {
        for ch in 0..c {
            let v = ((image[ch * plane + p] - lo) * scale).round();
            out[p * c + ch] = v.clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn value_range_maps_to_full_byte_range() {
        let props: BTreeMap<String, String> = [
            ("edgediff.format", "1"),
            ("edgediff.model_name", "t"),
            ("edgediff.num_train_timesteps", "1000"),
            ("edgediff.beta_schedule", "linear"),
            ("edgediff.beta_start", "0.0001"),
            ("edgediff.beta_end", "0.02"),
            ("edgediff.prediction_type", "epsilon"),
            ("edgediff.image_size", "1"),
            ("edgediff.channels", "3"),
            ("edgediff.value_range", "-1,1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let meta = ModelMeta::from_props(&props).unwrap();
        assert_eq!(to_pixels(&[-1.0, 0.0, 1.0], &meta), vec![0, 128, 255]);
        assert_eq!(to_pixels(&[-3.0, 0.999, 7.0], &meta), vec![0, 255, 255]);
    }
}
