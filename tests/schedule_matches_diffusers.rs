//! `sampler schedule --json` against tables dumped from real diffusers (DDIMScheduler and
//! DDPMScheduler, see crates/core/tests/fixtures/gen_diffusers_fixtures.py): every beta
//! schedule x spacing x step count, and for DDIM every eta in the fixture.

use std::process::Command;

use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/crates/core/tests/fixtures/diffusers_fixtures.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

fn schedule_json(args: &[String]) -> Value {
    let o = Command::new(env!("CARGO_BIN_EXE_sampler")).arg("schedule").arg("--json").args(args).output().unwrap();
    assert!(o.status.success(), "sampler schedule {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn assert_close(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // f32 values on both sides; allow a couple of f32 ulps relative.
        let tol = 4e-7 * w.abs().max(1e-6) + 1e-9;
        assert!((g - w).abs() <= tol, "{what}[{i}]: sampler {g} vs diffusers {w}");
    }
}

fn common_args(fx: &Value, table: &Value) -> Vec<String> {
    let name = table["schedule"].as_str().unwrap();
    let sched = &fx["schedules"][name];
    vec![
        "--meta".into(),
        format!("beta_schedule={name}"),
        "--meta".into(),
        format!("beta_start={}", sched["beta_start"]),
        "--meta".into(),
        format!("beta_end={}", sched["beta_end"]),
        "--meta".into(),
        format!("num_train_timesteps={}", fx["num_train_timesteps"]),
        "--steps".into(),
        table["steps"].to_string(),
        "--spacing".into(),
        table["spacing"].as_str().unwrap().into(),
    ]
}

#[test]
fn ddim_schedule_equals_diffusers_for_every_spacing_schedule_and_eta() {
    let fx = fixture();
    let mut checked = 0;
    for table in fx["ddim_tables"].as_array().unwrap() {
        for (eta, sigma) in table["sigma"].as_object().unwrap() {
            let mut args = common_args(&fx, table);
            args.extend([
                "--eta".into(),
                eta.clone(),
                "--steps-offset".into(),
                table["steps_offset"].to_string(),
                "--set-alpha-to-one".into(),
                table["set_alpha_to_one"].to_string(),
            ]);
            let got = schedule_json(&args);
            let what = format!("ddim {args:?}");
            assert_eq!(got["timesteps"], table["timesteps"], "{what}: timesteps");
            assert_close(&format!("{what} alpha_bar"), &floats(&got["alpha_bar"]), &floats(&table["alpha_bar"]));
            assert_close(
                &format!("{what} alpha_bar_prev"),
                &floats(&got["alpha_bar_prev"]),
                &floats(&table["alpha_bar_prev"]),
            );
            assert_close(&format!("{what} sigma"), &floats(&got["sigma"]), &floats(sigma));
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} DDIM tables checked");
}

#[test]
fn ddpm_schedule_equals_diffusers_for_every_spacing_and_schedule() {
    let fx = fixture();
    let mut checked = 0;
    for table in fx["ddpm_tables"].as_array().unwrap() {
        let mut args = common_args(&fx, table);
        args.extend(["--scheduler".into(), "ddpm".into()]);
        let got = schedule_json(&args);
        let what = format!("ddpm {args:?}");
        assert_eq!(got["timesteps"], table["timesteps"], "{what}: timesteps");
        assert_close(&format!("{what} alpha_bar"), &floats(&got["alpha_bar"]), &floats(&table["alpha_bar"]));
        assert_close(
            &format!("{what} alpha_bar_prev"),
            &floats(&got["alpha_bar_prev"]),
            &floats(&table["alpha_bar_prev"]),
        );
        assert_close(&format!("{what} sigma"), &floats(&got["sigma"]), &floats(&table["sigma"]));
        checked += 1;
    }
    assert_eq!(checked, 18);
}
