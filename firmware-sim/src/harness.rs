//! Runs a plan: build once, then every (profile, seed) case under qemu, judged by the gates.

use std::path::PathBuf;

use crate::emulate::{run_emulated, run_host, ModelChoice, Settings};
use crate::error::SimError;
use crate::gates::{judge, CaseResult, Expected};
use crate::profile::{Precision, Profile};
use crate::reference::Reference;
use crate::toolchain::Toolchain;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profiles: Vec<Profile>,
    pub precision: Precision,
    pub model: ModelChoice,
    pub reference: Reference,
    pub seeds: Vec<u64>,
    /// The reference's step count, or fewer/more: then x0 is compared with the host (x86_64)
    /// sampler run from the reference's x_T at this many steps, since the reference has no
    /// x0 for it (x_T is still checked against the reference).
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
    let host_sampler = if plan.steps != plan.reference.steps {
        log(format!(
            "{} steps requested, the reference has {}: x0 is compared with the host sampler run from the reference's x_T",
            plan.steps, plan.reference.steps
        ));
        Some(tools.build_host_sampler()?)
    } else {
        None
    };

    let mut results = Vec::new();
    for &seed in &plan.seeds {
        let x_t = plan.reference.x_t(seed)?;
        let settings = Settings::from_reference(&plan.reference, seed, plan.steps);
        let (x0, x0_source) = match &host_sampler {
            None => (plan.reference.x0(seed)?, format!("reference x0 ({} steps)", plan.reference.steps)),
            Some(host) => {
                let dir = plan.out_dir.join("runs").join(format!("host-seed{seed}-steps{}", plan.steps));
                let x0 = run_host(host, &plan.model, &settings, &plan.reference.seed_dir(seed).join("x_T.npy"), &dir)?;
                (x0, format!("host x86_64 sampler from reference x_T ({} steps)", plan.steps))
            }
        };
        for profile in &plan.profiles {
            let dir = plan.out_dir.join("runs").join(format!("{}-{}-seed{seed}", profile.name, plan.precision));
            log(format!("running {} {} seed {seed}, {} steps under qemu -cpu {}", profile.name, plan.precision, plan.steps, profile.qemu_cpu));
            let run = run_emulated(tools, &sampler, &plugin, profile, &plan.model, &settings, &dir)?;
            let expected = Expected { x_t: &x_t, x0: &x0, x0_source: x0_source.clone(), model_sha256: plan.reference.model_sha256.as_deref() };
            let result = judge(profile, plan.precision, seed, plan.steps, &expected, &run);
            log(summary_line(&result));
            results.push(result);
        }
    }
    Ok(results)
}

/// `cortex-a53 fp32 seed 0: pass, PSNR 61.2 dB, heap 40.1 MiB, 1234.5 M instr/eval, 212.0 s`.
pub fn summary_line(r: &CaseResult) -> String {
    format!(
        "{} {} seed {}: {}, PSNR {}, heap {}, {} instr/eval, {:.1} s",
        r.profile,
        r.precision,
        r.seed,
        if r.passed() { "pass" } else { "FAIL" },
        r.psnr_db.map(crate::parity::format_db).unwrap_or_else(|| "-".into()),
        r.peak_heap_bytes.map(|b| format!("{:.1} MiB", b as f64 / 1048576.0)).unwrap_or_else(|| "-".into()),
        r.insn_per_eval.map(|x| format!("{:.1} M", x / 1e6)).unwrap_or_else(|| "-".into()),
        r.wall_s
    )
}
