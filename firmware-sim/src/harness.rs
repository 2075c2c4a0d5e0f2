//! Runs a plan: build once, then every (seed, profile, precision) case under qemu, judged by the
//! gates against the fp32 reference, with the host (x86_64) run of the same model alongside.

use std::path::PathBuf;

use crate::emulate::{run_emulated, run_host, ModelChoice, Settings};
use crate::error::SimError;
use crate::gates::{judge, CaseResult, Expected};
use crate::profile::{Precision, Profile};
use crate::reference::{Array, Reference};
use crate::toolchain::Toolchain;

/// One model under test and the precision it is judged at.
#[derive(Debug, Clone)]
pub struct Variant {
    pub precision: Precision,
    pub model: ModelChoice,
    /// How the report names the model.
    pub label: String,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profiles: Vec<Profile>,
    pub variants: Vec<Variant>,
    /// The fp32 model the reference was made from: re-run on the host when `steps` differs from
    /// the reference's (its sha256 is checked against the reference's first).
    pub reference_model: ModelChoice,
    pub reference: Reference,
    pub seeds: Vec<u64>,
    /// The reference's step count, or fewer/more: then x0 is compared with the host (x86_64)
    /// sampler run of `reference_model` from the reference's x_T at this many steps, since the
    /// reference has no x0 for it (x_T is still checked against the reference).
    pub steps: u32,
    /// Where runs and the report go (`target/firmware-sim`).
    pub out_dir: PathBuf,
}

/// Builds what is needed and runs every case; `log` receives one line per step and case.
pub fn execute(tools: &Toolchain, plan: &Plan, log: &mut dyn FnMut(String)) -> Result<Vec<CaseResult>, SimError> {
    let cpus = tools.qemu_cpus()?;
    for p in &plan.profiles {
        if !cpus.contains(&p.qemu_cpu) {
            return Err(SimError::BadProfile {
                path: p.path.clone(),
                message: format!("this qemu does not emulate `{}` (it knows: {})", p.qemu_cpu, cpus.join(", ")),
            });
        }
    }
    log(format!("building sampler for {} (release)", crate::toolchain::TARGET));
    let sampler = tools.build_sampler()?;
    let plugin = tools.build_plugin(&plan.out_dir)?;
    log("building the host sampler (x86_64 comparison runs)".into());
    let host = tools.build_host_sampler()?;
    let re_reference = plan.steps != plan.reference.steps;
    if re_reference {
        log(format!(
            "{} steps requested, the reference has {}: x0 is compared with the host sampler run from the reference's x_T",
            plan.steps, plan.reference.steps
        ));
    }

    let mut results = Vec::new();
    for &seed in &plan.seeds {
        let x_t = plan.reference.x_t(seed)?;
        let settings = Settings::from_reference(&plan.reference, seed, plan.steps);
        let (x0, x0_source) = if re_reference {
            (host_reference_x0(&host, plan, &settings, seed)?, format!("fp32 host x86_64 sampler from reference x_T ({} steps)", plan.steps))
        } else {
            (plan.reference.x0(seed)?, format!("fp32 reference x0 ({} steps)", plan.reference.steps))
        };
        let mut host_x0: Vec<Array> = Vec::new();
        for v in &plan.variants {
            let dir = plan.out_dir.join("runs").join(format!("host-{}-seed{seed}-steps{}", v.precision, plan.steps));
            host_x0.push(run_host(&host, &v.model, &settings, None, &dir)?.x0);
        }
        for profile in &plan.profiles {
            for (v, host_x0) in plan.variants.iter().zip(&host_x0) {
                let dir = plan.out_dir.join("runs").join(format!("{}-{}-seed{seed}", profile.name, v.precision));
                log(format!("running {} {} seed {seed}, {} steps under qemu -cpu {}", profile.name, v.precision, plan.steps, profile.qemu_cpu));
                let run = run_emulated(tools, &sampler, &plugin, profile, &v.model, &settings, &dir)?;
                let expected = Expected {
                    x_t: &x_t,
                    x0: &x0,
                    x0_source: x0_source.clone(),
                    host_x0: Some(host_x0),
                    // The reference names the fp32 model; other precisions run other files.
                    model_sha256: if v.precision == Precision::Fp32 { plan.reference.model_sha256.as_deref() } else { None },
                };
                let result = judge(profile, v.precision, seed, plan.steps, &expected, &run);
                log(summary_line(&result));
                results.push(result);
            }
        }
    }
    Ok(results)
}

/// The fp32 x0 at a step count the reference lacks: the reference model on the host from the
/// reference's x_T, refused if that model is not the one the reference names.
fn host_reference_x0(host: &std::path::Path, plan: &Plan, settings: &Settings, seed: u64) -> Result<Array, SimError> {
    let dir = plan.out_dir.join("runs").join(format!("host-reference-seed{seed}-steps{}", plan.steps));
    let run = run_host(host, &plan.reference_model, settings, Some(&plan.reference.seed_dir(seed).join("x_T.npy")), &dir)?;
    if let Some(want) = &plan.reference.model_sha256 {
        if !want.eq_ignore_ascii_case(&run.report.model_sha256) {
            return Err(SimError::Invalid(format!(
                "the model used to re-reference x0 at {} steps has sha256 {}, but the reference {} was made from {want}",
                plan.steps,
                run.report.model_sha256,
                plan.reference.dir.display()
            )));
        }
    }
    Ok(run.x0)
}

/// `cortex-a53 int8 seed 0: pass, PSNR 40.1 dB (vs x86_64 52.3 dB), heap 18.0 MiB, 63.2 M instr/eval, 15.0 s`.
pub fn summary_line(r: &CaseResult) -> String {
    let db = |v: Option<f64>| v.map(crate::parity::format_db).unwrap_or_else(|| "-".into());
    format!(
        "{} {} seed {}: {}, PSNR {} (vs x86_64 {}), heap {}, {} instr/eval, {:.1} s",
        r.profile,
        r.precision,
        r.seed,
        if r.passed() { "pass" } else { "FAIL" },
        db(r.psnr_db),
        db(r.psnr_vs_host_db),
        r.peak_heap_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into()),
        r.insn_per_eval.map(|x| format!("{:.1} M", x / 1e6)).unwrap_or_else(|| "-".into()),
        r.wall_s
    )
}
