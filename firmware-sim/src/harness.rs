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
    /// Metadata overrides its runs (emulated and host) pass to the sampler.
    pub meta: Vec<String>,
}

impl Variant {
    /// `settings` with this variant's metadata overrides.
    fn settings(&self, settings: &Settings) -> Settings {
        Settings { meta: self.meta.clone(), ..settings.clone() }
    }
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
    /// Also run each case as a batch of this many images and gate batch invariance.
    pub batch_check: Option<u32>,
}

/// Builds what is needed and runs every case; `log` receives one line per step and case.
pub fn execute(tools: &Toolchain, plan: &Plan, log: &mut dyn FnMut(String)) -> Result<Vec<CaseResult>, SimError> {
    check_qemu_cpus(tools, &plan.profiles)?;
    let mut runner = Runner::build(tools, plan, log)?;
    if runner.re_reference() {
        (runner.log)(format!(
            "{} steps requested, the reference has {}: x0 is compared with the host sampler run from the reference's x_T",
            plan.steps, plan.reference.steps
        ));
    }
    let mut results = Vec::new();
    for &seed in &plan.seeds {
        results.extend(runner.run_seed(seed)?);
    }
    Ok(results)
}

/// Refuses a profile whose CPU this qemu cannot emulate, before anything is built.
fn check_qemu_cpus(tools: &Toolchain, profiles: &[Profile]) -> Result<(), SimError> {
    let cpus = tools.qemu_cpus()?;
    for p in profiles {
        if !cpus.contains(&p.qemu_cpu) {
            return Err(SimError::BadProfile {
                path: p.path.clone(),
                message: format!("this qemu does not emulate `{}` (it knows: {})", p.qemu_cpu, cpus.join(", ")),
            });
        }
    }
    Ok(())
}

/// A plan being run: the tools, the programs built for it, and where progress is logged.
struct Runner<'a> {
    tools: &'a Toolchain,
    plan: &'a Plan,
    /// The aarch64 sampler.
    sampler: PathBuf,
    /// The instruction-counting qemu plugin.
    plugin: PathBuf,
    /// The x86_64 sampler, for the comparison runs and any re-reference.
    host: PathBuf,
    log: &'a mut dyn FnMut(String),
}

impl<'a> Runner<'a> {
    /// Builds the aarch64 sampler, the plugin and the host sampler.
    fn build(tools: &'a Toolchain, plan: &'a Plan, log: &'a mut dyn FnMut(String)) -> Result<Self, SimError> {
        log(format!("building sampler for {} (release)", crate::toolchain::TARGET));
        let sampler = tools.build_sampler()?;
        let plugin = tools.build_plugin(&plan.out_dir)?;
        log("building the host sampler (x86_64 comparison runs)".into());
        let host = tools.build_host_sampler()?;
        Ok(Runner { tools, plan, sampler, plugin, host, log })
    }

    /// The reference has no x0 at the requested step count: it is made on the host.
    fn re_reference(&self) -> bool {
        self.plan.steps != self.plan.reference.steps
    }

    /// Every (profile, variant) case of one seed, against the same x_T and fp32 x0.
    fn run_seed(&mut self, seed: u64) -> Result<Vec<CaseResult>, SimError> {
        let plan = self.plan;
        let x_t = plan.reference.x_t(seed)?;
        let settings = Settings::from_reference(&plan.reference, seed, plan.steps);
        let (x0, x0_source) = self.reference_x0(&settings)?;
        let host_x0 = self.host_x0s(&settings)?;
        let host_batches = match plan.batch_check {
            Some(n) => Some(self.host_batches(&settings, n, &host_x0)?),
            None => None,
        };
        let mut results = Vec::new();
        for profile in &plan.profiles {
            for (i, (v, host_x0)) in plan.variants.iter().zip(&host_x0).enumerate() {
                let expected = Expected {
                    x_t: &x_t,
                    x0: &x0,
                    x0_source: x0_source.clone(),
                    host_x0: Some(host_x0),
                    // The reference names the fp32 model; other precisions run other files.
                    model_sha256: if v.precision == Precision::Fp32 {
                        plan.reference.model_sha256.as_deref()
                    } else {
                        None
                    },
                };
                let host_batch = host_batches.as_ref().map(|b| &b[i]);
                results.push(self.run_case(profile, v, &settings, &expected, host_batch)?);
            }
        }
        Ok(results)
    }

    /// The fp32 x0 every precision is judged against, and how the report names it.
    fn reference_x0(&self, settings: &Settings) -> Result<(Array, String), SimError> {
        let (plan, seed) = (self.plan, settings.seed);
        if self.re_reference() {
            Ok((
                host_reference_x0(&self.host, plan, settings, seed)?,
                format!("fp32 host x86_64 sampler from reference x_T ({} steps)", plan.steps),
            ))
        } else {
            Ok((plan.reference.x0(seed)?, format!("fp32 reference x0 ({} steps)", plan.reference.steps)))
        }
    }

    /// The host sampler's x0 for every variant, in the plan's order.
    fn host_x0s(&self, settings: &Settings) -> Result<Vec<Array>, SimError> {
        let (plan, seed) = (self.plan, settings.seed);
        let mut host_x0 = Vec::new();
        for v in &plan.variants {
            let dir = plan.out_dir.join("runs").join(format!("host-{}-seed{seed}-steps{}", v.precision, plan.steps));
            host_x0.push(run_host(&self.host, &v.model, &v.settings(settings), None, &dir)?.x0);
        }
        Ok(host_x0)
    }

    /// Per variant, the host's batch of `n` from this seed and each of its seeds alone (seed S's
    /// is `host_x0`, the run already made; the others are run here), once for every profile.
    fn host_batches(&self, settings: &Settings, n: u32, host_x0: &[Array]) -> Result<Vec<HostBatch>, SimError> {
        let (plan, seed) = (self.plan, settings.seed);
        let mut batches = Vec::new();
        for (v, first) in plan.variants.iter().zip(host_x0) {
            let batch_settings = v.settings(&Settings { batch: Some(n), ..settings.clone() });
            let dir = plan.out_dir.join("runs").join(format!("host-{}-seed{seed}-batch{n}", v.precision));
            let batch = run_host(&self.host, &v.model, &batch_settings, None, &dir)?.x0;
            let mut alone = vec![first.clone()];
            for s in seed + 1..seed + n as u64 {
                let one = v.settings(&Settings { seed: s, ..settings.clone() });
                let dir = plan.out_dir.join("runs").join(format!("host-{}-seed{s}-steps{}", v.precision, plan.steps));
                alone.push(run_host(&self.host, &v.model, &one, None, &dir)?.x0);
            }
            batches.push(HostBatch { batch, alone });
        }
        Ok(batches)
    }

    /// One emulated run, judged.
    fn run_case(
        &mut self,
        profile: &Profile,
        v: &Variant,
        settings: &Settings,
        expected: &Expected,
        host_batch: Option<&HostBatch>,
    ) -> Result<CaseResult, SimError> {
        let (plan, seed) = (self.plan, settings.seed);
        let dir = plan.out_dir.join("runs").join(format!("{}-{}-seed{seed}", profile.name, v.precision));
        (self.log)(format!(
            "running {} {} seed {seed}, {} steps under qemu -cpu {}",
            profile.name, v.precision, plan.steps, profile.qemu_cpu
        ));
        let run =
            run_emulated(self.tools, &self.sampler, &self.plugin, profile, &v.model, &v.settings(settings), &dir)?;
        let mut result = judge(profile, v.precision, seed, plan.steps, expected, &run);
        if let (Some(host), Some(single)) = (host_batch, &run.x0) {
            self.check_batch(profile, v, settings, single, host, &mut result)?;
        }
        (self.log)(summary_line(&result));
        Ok(result)
    }

    /// The case again under qemu as a batch of as many images as `host` has: image 0 must be
    /// the single run's bytes and the whole batch the x86_64 host's batch, whose image k must be
    /// seed + k alone on the host. So image k of an aarch64 batch is the image of seed + k, on
    /// every CPU.
    fn check_batch(
        &mut self,
        profile: &Profile,
        v: &Variant,
        settings: &Settings,
        single: &Array,
        host: &HostBatch,
        result: &mut CaseResult,
    ) -> Result<(), SimError> {
        let (plan, seed, n) = (self.plan, settings.seed, host.alone.len() as u32);
        let batch = v.settings(&Settings { batch: Some(n), ..settings.clone() });
        let dir = plan.out_dir.join("runs").join(format!("{}-{}-seed{seed}-batch{n}", profile.name, v.precision));
        (self.log)(format!("running {} {} seed {seed} as a batch of {n} under qemu", profile.name, v.precision));
        let run = run_emulated(self.tools, &self.sampler, &self.plugin, profile, &v.model, &batch, &dir)?;
        match &run.x0 {
            Some(emulated) => result.judge_batch(n, emulated, single, &host.batch, &host.alone),
            None => result.batch_run_failed(run.failure.unwrap_or_else(|| "no x0".into())),
        }
        Ok(())
    }
}

/// The x86_64 host's batch of one variant and seed, and each of its seeds alone.
struct HostBatch {
    batch: Array,
    alone: Vec<Array>,
}

/// The fp32 x0 at a step count the reference lacks: the reference model on the host from the
/// reference's x_T, refused if that model is not the one the reference names.
fn host_reference_x0(host: &std::path::Path, plan: &Plan, settings: &Settings, seed: u64) -> Result<Array, SimError> {
    let dir = plan.out_dir.join("runs").join(format!("host-reference-seed{seed}-steps{}", plan.steps));
    let run =
        run_host(host, &plan.reference_model, settings, Some(&plan.reference.seed_dir(seed).join("x_T.npy")), &dir)?;
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
