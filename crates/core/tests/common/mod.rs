//! Shared by the diffusers parity tests (`diffusers_parity.rs`: schedules, DDIM, DDPM;
//! `dpm_parity.rs`: DPM-Solver++): fixture access, the difference tracker, and the scheduler
//! configuration a fixture case describes. Each test binary uses a subset.
#![allow(dead_code)]

use edgediff_core::{BetaSchedule, ModelSchedule, NoiseSchedule, PredictionType, SamplerSettings, SchedulerKind};
use serde_json::Value;

/// Relative agreement required everywhere (the measured worst case is printed by each test).
pub const REL_TOL: f64 = 1e-6;
/// Most ulps a per-step coefficient may differ by (torch's sqrt rounding, see above).
pub const COEFF_ULPS: u32 = 1;

pub fn fixtures() -> Value {
    serde_json::from_str(include_str!("../fixtures/diffusers_fixtures.json")).expect("fixture JSON parses")
}

pub fn f32s(v: &Value) -> Vec<f32> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
}

pub fn ints(v: &Value) -> Vec<i64> {
    v.as_array().expect("array").iter().map(|x| x.as_i64().expect("integer")).collect()
}

pub fn text(v: &Value) -> &str {
    v.as_str().expect("string")
}

pub fn uint(v: &Value) -> usize {
    v.as_u64().expect("unsigned integer") as usize
}

/// Tracks the worst relative difference seen and how many values matched bit for bit.
#[derive(Default)]
pub struct Diff {
    pub worst: f64,
    pub worst_abs: f64,
    pub exact: usize,
    pub total: usize,
    pub max_ulps: u32,
}

/// Distance in units in the last place between two finite f32 of the same sign (else u32::MAX).
pub fn ulps(a: f32, b: f32) -> u32 {
    if a == b {
        0
    } else if a.is_sign_negative() == b.is_sign_negative() {
        a.to_bits().abs_diff(b.to_bits())
    } else {
        u32::MAX
    }
}

impl Diff {
    pub fn check(&mut self, what: &str, got: &[f32], want: &[f32]) {
        self.check_within(what, got, want, REL_TOL, 1e-3);
    }

    /// |got - want| <= tol · max(|want|, floor) elementwise (relative, absolute below `floor`).
    pub fn check_within(&mut self, what: &str, got: &[f32], want: &[f32], tol: f64, floor: f64) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            let abs = f64::from((g - w).abs());
            let rel = abs / f64::from(w.abs()).max(floor);
            assert!(rel <= tol, "{what}[{k}]: got {g}, diffusers {w} (relative {rel:.2e})");
            self.worst = self.worst.max(rel);
            self.worst_abs = self.worst_abs.max(abs);
            self.exact += usize::from(g.to_bits() == w.to_bits());
            self.max_ulps = self.max_ulps.max(ulps(g, w));
            self.total += 1;
        }
    }

    pub fn report(&self, name: &str) {
        eprintln!(
            "{name}: {} values, {} bit-identical, worst {} ulp / relative {:.2e} / absolute {:.2e}",
            self.total, self.exact, self.max_ulps, self.worst, self.worst_abs
        );
    }
}

/// The model a fixture case describes: its beta schedule (by name, from the fixture's
/// schedules), T, prediction type and clipping.
pub fn model(fx: &Value, case: &Value) -> ModelSchedule {
    let name = text(&case["schedule"]);
    let s = &fx["schedules"][name];
    ModelSchedule {
        num_train_timesteps: uint(&fx["num_train_timesteps"]),
        beta_schedule: name.parse::<BetaSchedule>().unwrap(),
        beta_start: s["beta_start"].as_f64().unwrap() as f32,
        beta_end: s["beta_end"].as_f64().unwrap() as f32,
        trained_betas: None,
        rescale_betas_zero_snr: false,
        dpm_clip_sample: true,
        prediction_type: case.get("prediction_type").map_or(PredictionType::Epsilon, |p| text(p).parse().unwrap()),
        clip_sample: case.get("clip_sample").and_then(Value::as_f64).map(|r| r as f32),
    }
}

/// The noise schedule of the fixture's beta schedule `name`.
pub fn schedule(fx: &Value, name: &str) -> NoiseSchedule {
    model(fx, &serde_json::json!({ "schedule": name })).noise_schedule().unwrap()
}

/// The sampler settings a fixture case describes.
pub fn settings(kind: SchedulerKind, case: &Value) -> SamplerSettings {
    SamplerSettings {
        kind,
        steps: uint(&case["steps"]),
        spacing: text(&case["spacing"]).parse().unwrap(),
        steps_offset: case.get("steps_offset").map_or(0, uint),
        eta: case.get("eta").and_then(Value::as_f64).unwrap_or(0.0) as f32,
        set_alpha_to_one: case.get("set_alpha_to_one").and_then(Value::as_bool).unwrap_or(true),
    }
}
