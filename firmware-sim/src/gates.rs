//! Judging one emulated run against the reference: the parity and memory gates, and the
//! figures the report shows. Pure functions of the data, so they are tested without qemu.

use crate::emulate::{Counts, EmulatedRun, SamplerReport};
use crate::parity::{compare_bits, format_db, psnr_db};
use crate::profile::{Precision, Profile};
use crate::reference::Array;

/// One gate's outcome; `detail` carries the measured number.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub gate: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// Everything known about one (profile, precision, seed) case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub profile: String,
    pub qemu_cpu: String,
    pub tract_kind: String,
    pub threads: u32,
    pub precision: Precision,
    pub seed: u64,
    pub steps: u32,
    /// Where the x0 compared against came from (the reference, or a host re-run).
    pub x0_reference: String,
    /// The gated PSNR: final sample vs the fp32 x0 named by `x0_reference`.
    pub psnr_db: Option<f64>,
    /// Not a gate: final sample vs the x86_64 host sampler's, same model, seed and steps. Shows
    /// how much this precision's arithmetic differs between CPUs (int8 more than fp32).
    pub psnr_vs_host_db: Option<f64>,
    /// sha256 of the final sample's f32 values (little-endian), and of the x86_64 host
    /// sampler's for the same model, seed and steps.
    pub x0_sha256: Option<String>,
    pub host_x0_sha256: Option<String>,
    /// The model the emulated sampler ran (its report's sha256).
    pub model_sha256: Option<String>,
    pub peak_heap_bytes: Option<u64>,
    pub budget_bytes: u64,
    /// Median over the run's evaluations (see `Counts::median_per_eval`).
    pub insn_per_eval: Option<f64>,
    pub insn_eval_spread: Option<f64>,
    pub insn_per_image: Option<u64>,
    pub insn_total: Option<u64>,
    pub wall_s: f64,
    pub checks: Vec<Check>,
}

/// The gates of a batch run (`firmware-sim run --batch-check`): image 0 against the single
/// run, the batch against the x86_64 host's, each host image against its seed alone, and the
/// batch run itself.
const BATCH_GATES: [&str; 4] =
    ["batch image 0 = single run", "batch = x86_64 batch", "x86_64 batch image k = seed+k alone", "batch run"];

impl CaseResult {
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// One line per failed gate, naming profile, seed, precision and the measured number.
    pub fn failures(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| {
                format!("FAIL profile {} seed {} {}: {}: {}", self.profile, self.seed, self.precision, c.gate, c.detail)
            })
            .collect()
    }
}

/// sha256 of an array's f32 values, little-endian.
pub fn x0_sha256(x0: &Array) -> String {
    let bytes: Vec<u8> = x0.data.iter().flat_map(|v| v.to_le_bytes()).collect();
    edgediff_io::sha256_hex(&bytes)
}

/// What a run is compared with.
pub struct Expected<'a> {
    pub x_t: &'a Array,
    /// The fp32 x0 every precision is gated against.
    pub x0: &'a Array,
    pub x0_source: String,
    /// The x86_64 host sampler's x0 for the same model (reported, not gated).
    pub host_x0: Option<&'a Array>,
    /// The model the reference was made from; checked only when the run uses that model.
    pub model_sha256: Option<&'a str>,
}

/// Applies every gate of `profile` at `precision` to `run`.
pub fn judge(
    profile: &Profile,
    precision: Precision,
    seed: u64,
    steps: u32,
    expected: &Expected,
    run: &EmulatedRun,
) -> CaseResult {
    let mut r = CaseResult::unjudged(profile, precision, seed, steps, expected, run);
    if let Some(failure) = &run.failure {
        r.check("sampler run", false, failure.clone());
        return r;
    }
    let (Some(x_t), Some(x0), Some(report), Some(counts)) = (&run.x_t, &run.x0, &run.report, &run.counts) else {
        r.check("sampler run", false, "outputs missing".into());
        return r;
    };
    r.check_model(expected, report);
    let bits = compare_bits(x_t, expected.x_t);
    r.check("x_T bit-identical", bits.identical(), bits.describe());
    r.check_psnr(profile, expected, x0, report);
    r.check_same_bytes(x0, report);
    r.check_heap(report);
    r.check_counts(counts, report);
    r
}

impl CaseResult {
    /// The case's settings and wall time, before any gate has been applied.
    fn unjudged(
        profile: &Profile,
        precision: Precision,
        seed: u64,
        steps: u32,
        expected: &Expected,
        run: &EmulatedRun,
    ) -> CaseResult {
        CaseResult {
            profile: profile.name.clone(),
            qemu_cpu: profile.qemu_cpu.clone(),
            tract_kind: profile.tract_kind.clone(),
            threads: profile.threads,
            precision,
            seed,
            steps,
            x0_reference: expected.x0_source.clone(),
            psnr_db: None,
            psnr_vs_host_db: None,
            x0_sha256: None,
            host_x0_sha256: expected.host_x0.map(x0_sha256),
            model_sha256: None,
            peak_heap_bytes: None,
            budget_bytes: profile.memory_budget_bytes(),
            insn_per_eval: None,
            insn_eval_spread: None,
            insn_per_image: None,
            insn_total: None,
            wall_s: run.wall.as_secs_f64(),
            checks: Vec::new(),
        }
    }

    /// Records one gate's outcome.
    fn check(&mut self, gate: &'static str, passed: bool, detail: String) {
        self.checks.push(Check { gate, passed, detail });
    }

    /// Batch invariance (see [`BATCH_GATES`]): the emulated batch of `n` (seeds S..S+n) against the emulated single
    /// run of S, the x86_64 host's batch, and the host's runs of each seed alone (`alone[k]` is
    /// seed S+k), all bit for bit.
    pub fn judge_batch(&mut self, n: u32, emulated: &Array, single: &Array, host: &Array, alone: &[Array]) {
        let per = single.data.len().max(1);
        let images = |a: &Array| a.data.chunks(per).map(|c| c.iter().map(|v| v.to_bits()).collect()).collect();
        let (e, h): (Vec<Vec<u32>>, Vec<Vec<u32>>) = (images(emulated), images(host));
        let one: Vec<Vec<u32>> = images(single);
        let first = e.len() == n as usize && e.first() == one.first();
        self.check(BATCH_GATES[0], first, format!("batch of {n}: {} images", e.len()));
        self.check(
            BATCH_GATES[1],
            e == h,
            format!("{} of {} images equal", e.iter().zip(&h).filter(|(a, b)| a == b).count(), n),
        );
        let each: Vec<bool> = h.iter().zip(alone).map(|(h, a)| images(a).first() == Some(h)).collect();
        let all = each.len() == n as usize && each.iter().all(|&b| b);
        self.check(BATCH_GATES[2], all, format!("{each:?}"));
    }

    /// Whether the case's batch gates passed, if it ran as a batch too.
    pub fn batch_passed(&self) -> Option<bool> {
        let batch: Vec<&Check> = self.checks.iter().filter(|c| BATCH_GATES.contains(&c.gate)).collect();
        (!batch.is_empty()).then(|| batch.iter().all(|c| c.passed))
    }

    /// The batch run itself failed.
    pub fn batch_run_failed(&mut self, detail: String) {
        self.check(BATCH_GATES[3], false, detail);
    }

    /// The run used the reference's model (when the reference names one for this run) and a
    /// model of the precision asked for.
    fn check_model(&mut self, expected: &Expected, report: &SamplerReport) {
        self.model_sha256 = Some(report.model_sha256.clone());
        if let Some(want) = expected.model_sha256 {
            let same = want.eq_ignore_ascii_case(&report.model_sha256);
            self.check("model", same, format!("sha256 {} (reference: {want})", report.model_sha256));
        }
        let precision = self.precision;
        let model_precision = report.precision.parse::<Precision>().ok();
        self.check(
            "precision",
            model_precision == Some(precision),
            format!("model is {}, run asked for {precision}", report.precision),
        );
    }

    /// The final sample against the fp32 x0, by the profile's threshold for this precision;
    /// also records (ungated) the PSNR against the host sampler's sample.
    fn check_psnr(&mut self, profile: &Profile, expected: &Expected, x0: &Array, report: &SamplerReport) {
        match (profile.gate(self.precision), psnr_db(x0, expected.x0, report.value_range)) {
            (Ok(gate), Ok(db)) => {
                self.psnr_db = Some(db);
                self.check(
                    "x0 PSNR",
                    db >= gate.min_psnr_db,
                    format!("{} vs {} (min {} dB)", format_db(db), expected.x0_source, gate.min_psnr_db),
                );
            }
            (Err(e), _) => self.check("x0 PSNR", false, e.to_string()),
            (_, Err(e)) => self.check("x0 PSNR", false, e),
        }
        self.psnr_vs_host_db = expected.host_x0.and_then(|host| psnr_db(x0, host, report.value_range).ok());
    }

    /// The final sample's bytes are the x86_64 host's, fp32 and int8 alike: every float op of the
    /// network runs in one fixed order on every CPU, and the int8 sums are exact. A model that
    /// asks for tract's per-CPU kernels (`edgediff.float_order = tract`) is only reported.
    fn check_same_bytes(&mut self, x0: &Array, report: &SamplerReport) {
        let sha = x0_sha256(x0);
        if let (Some(host), "fixed") = (&self.host_x0_sha256, report.float_order.as_str()) {
            self.check("x0 bytes = x86_64", &sha == host, format!("sha256 {sha} (x86_64: {host})"));
        }
        self.x0_sha256 = Some(sha);
    }

    /// The sampler's peak heap within the profile's memory budget.
    fn check_heap(&mut self, report: &SamplerReport) {
        self.peak_heap_bytes = Some(report.peak_heap_bytes);
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        self.check(
            "peak heap",
            report.peak_heap_bytes <= self.budget_bytes,
            format!("{:.1} MiB (budget {:.0} MiB)", mib(report.peak_heap_bytes), mib(self.budget_bytes)),
        );
    }

    /// One counted evaluation per network evaluation the sampler reports (else the per-eval
    /// figures would be wrong), and the instruction figures themselves.
    fn check_counts(&mut self, counts: &Counts, report: &SamplerReport) {
        let markers_ok = counts.evals.len() as u64 == report.evaluations && counts.unmatched_markers == 0;
        self.check(
            "eval markers",
            markers_ok,
            format!(
                "{} evaluations counted of {}, {} unmatched markers",
                counts.evals.len(),
                report.evaluations,
                counts.unmatched_markers
            ),
        );
        self.insn_per_eval = counts.median_per_eval();
        self.insn_eval_spread = counts.eval_spread();
        self.insn_per_image = Some(counts.sampling_loop);
        self.insn_total = Some(counts.total);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    const FP32_ONLY: &str =
        "description = \"t\"\nqemu_cpu = \"cortex-a53\"\ntract_kind = \"a53\"\nboard_ram_mib = 512\n\
                             memory_budget_mib = 128\nthreads = 1\n[gates.fp32]\nmin_psnr_db = 50.0\n";

    fn profile() -> Profile {
        let text = format!("{FP32_ONLY}[gates.int8]\nmin_psnr_db = 35.0\n");
        Profile::parse("cortex-a53", Path::new("cortex-a53.toml"), &text).unwrap()
    }

    fn arr(data: Vec<f32>) -> Array {
        Array { shape: vec![1, 1, 1, data.len()], data }
    }

    /// 100 zeros but `x0[0] = v`: PSNR 10 log10(1 / ((v / 2)^2 / 100)) against all zeros.
    fn zeros_but_first(v: f32) -> Vec<f32> {
        let mut x = vec![0.0; 100];
        x[0] = v;
        x
    }

    fn run(x0: Vec<f32>, heap: u64, precision: &str) -> EmulatedRun {
        EmulatedRun {
            wall: Duration::from_secs(3),
            failure: None,
            x_t: Some(arr(vec![0.5; 100])),
            x0: Some(arr(x0)),
            report: Some(SamplerReport {
                model_sha256: "abc".into(),
                precision: precision.into(),
                float_order: "fixed".into(),
                value_range: (-1.0, 1.0),
                peak_heap_bytes: heap,
                evaluations: 2,
            }),
            counts: Some(Counts { total: 900, sampling_loop: 410, evals: vec![200, 202], unmatched_markers: 0 }),
        }
    }

    #[test]
    fn passing_run_passes_every_gate() {
        let (x_t, x0) = (arr(vec![0.5; 100]), arr(vec![0.0; 100]));
        let host = arr(vec![0.0; 100]);
        let exp = Expected {
            x_t: &x_t,
            x0: &x0,
            x0_source: "reference".into(),
            host_x0: Some(&host),
            model_sha256: Some("ABC"),
        };
        let r = judge(&profile(), Precision::Fp32, 0, 2, &exp, &run(vec![0.0; 100], 10 << 20, "fp32"));
        assert!(r.passed(), "{:?}", r.failures());
        assert_eq!((r.psnr_db, r.psnr_vs_host_db), (Some(f64::INFINITY), Some(f64::INFINITY)));
        assert_eq!(r.x0_sha256, r.host_x0_sha256);
        assert_eq!(r.model_sha256.as_deref(), Some("abc"));
        assert_eq!((r.insn_per_eval, r.insn_per_image), (Some(201.0), Some(410)));
    }

    #[test]
    fn fp32_and_int8_must_have_the_hosts_bytes() {
        let (x_t, x0) = (arr(vec![0.5; 100]), arr(vec![0.0; 100]));
        let host = arr(zeros_but_first(0.2)); // 40 dB from the emulated x0
        let exp =
            Expected { x_t: &x_t, x0: &x0, x0_source: "reference".into(), host_x0: Some(&host), model_sha256: None };
        let fp32 = judge(&profile(), Precision::Fp32, 0, 2, &exp, &run(vec![0.0; 100], 1, "fp32"));
        assert!((fp32.psnr_vs_host_db.unwrap() - 40.0).abs() < 1e-5, "{:?}", fp32.psnr_vs_host_db);
        let f = fp32.failures().join("\n");
        assert!(f.contains("x0 bytes = x86_64: sha256 ") && f.contains(&x0_sha256(&host)), "{f}");
        let int8 = judge(&profile(), Precision::Int8, 0, 2, &exp, &run(vec![0.0; 100], 1, "int8"));
        assert!(int8.failures().join("\n").contains("x0 bytes = x86_64: sha256 "), "{:?}", int8.failures());
        let same = arr(vec![0.0; 100]);
        let exp = Expected { host_x0: Some(&same), ..exp };
        let int8 = judge(&profile(), Precision::Int8, 0, 2, &exp, &run(vec![0.0; 100], 1, "int8"));
        assert!(int8.passed(), "{:?}", int8.failures());
        assert_eq!(int8.x0_sha256, int8.host_x0_sha256);
        // A model on tract's per-CPU kernels: its bytes are reported, not gated.
        let exp = Expected { host_x0: Some(&host), ..exp };
        let mut tract = run(vec![0.0; 100], 1, "int8");
        tract.report.as_mut().unwrap().float_order = "tract".into();
        let int8 = judge(&profile(), Precision::Int8, 0, 2, &exp, &tract);
        assert!(int8.passed(), "{:?}", int8.failures());
        assert_ne!(int8.x0_sha256, int8.host_x0_sha256);
    }

    #[test]
    fn a_batch_must_be_its_seeds_alone_and_the_hosts_batch() {
        let (x_t, x0) = (arr(vec![0.5; 100]), arr(vec![0.0; 100]));
        let exp = Expected { x_t: &x_t, x0: &x0, x0_source: "reference".into(), host_x0: None, model_sha256: None };
        let images = |v: [f32; 3]| Array { shape: vec![3, 1, 1, 2], data: v.iter().flat_map(|&x| [x, x]).collect() };
        let one = |v: f32| Array { shape: vec![1, 1, 1, 2], data: vec![v, v] };
        let alone = [one(1.0), one(2.0), one(3.0)];
        let judged = |emulated: &Array, host: &Array| {
            let mut r = judge(&profile(), Precision::Fp32, 0, 2, &exp, &run(vec![0.0; 100], 1, "fp32"));
            r.judge_batch(3, emulated, &one(1.0), host, &alone);
            r.failures().join("\n")
        };
        let good = images([1.0, 2.0, 3.0]);
        assert_eq!(judged(&good, &good), "");
        assert!(judged(&images([1.0, 2.5, 3.0]), &good).contains("batch = x86_64 batch"));
        let f = judged(&images([1.5, 2.0, 3.0]), &images([1.5, 2.0, 3.0]));
        assert!(f.contains("batch image 0 = single run") && f.contains("seed+k alone"), "{f}");
    }

    #[test]
    fn failures_name_profile_seed_precision_and_number() {
        let (x_t, x0) = (arr(vec![0.25; 100]), arr(vec![0.0; 100]));
        let exp =
            Expected { x_t: &x_t, x0: &x0, x0_source: "reference".into(), host_x0: None, model_sha256: Some("def") };
        let r = judge(&profile(), Precision::Fp32, 3, 2, &exp, &run(zeros_but_first(0.2), 200 << 20, "fp32"));
        let f = r.failures().join("\n");
        assert!(!r.passed());
        assert!(f.contains("FAIL profile cortex-a53 seed 3 fp32: x0 PSNR: 40.00 dB"), "{f}");
        assert!(f.contains("peak heap: 200.0 MiB (budget 128 MiB)"), "{f}");
        assert!(f.contains("x_T bit-identical: 100 of 100 values differ"), "{f}");
        assert!(f.contains("model: sha256 abc (reference: def)"), "{f}");
        assert_eq!(r.psnr_vs_host_db, None);
    }

    #[test]
    fn int8_is_gated_at_its_own_threshold_against_the_fp32_x0() {
        let (x_t, x0) = (arr(vec![0.5; 100]), arr(vec![0.0; 100]));
        // The reference names the fp32 model: an int8 run is not held to its sha256.
        let exp =
            Expected { x_t: &x_t, x0: &x0, x0_source: "fp32 reference x0".into(), host_x0: None, model_sha256: None };
        // 0.3 -> 36.48 dB: below the fp32 gate (50) but above int8's (35).
        let r = judge(&profile(), Precision::Int8, 1, 2, &exp, &run(zeros_but_first(0.3), 1, "int8"));
        assert!(r.passed(), "{:?}", r.failures());
        assert!((r.psnr_db.unwrap() - 36.478).abs() < 1e-3, "{:?}", r.psnr_db);
        let fp32 = judge(&profile(), Precision::Fp32, 1, 2, &exp, &run(zeros_but_first(0.3), 1, "fp32"));
        assert!(
            fp32.failures().join("\n").contains("x0 PSNR: 36.48 dB vs fp32 reference x0 (min 50 dB)"),
            "{:?}",
            fp32.failures()
        );
        // 0.4 -> 33.98 dB: fails, and the line names profile, seed, precision and the number.
        let r = judge(&profile(), Precision::Int8, 1, 2, &exp, &run(zeros_but_first(0.4), 1, "int8"));
        let f = r.failures().join("\n");
        assert_eq!(r.failures().len(), 1, "{f}");
        assert!(
            f.contains("FAIL profile cortex-a53 seed 1 int8: x0 PSNR: 33.98 dB vs fp32 reference x0 (min 35 dB)"),
            "{f}"
        );
        // An fp32 model run as int8 is caught by the precision check, whatever its PSNR.
        let r = judge(&profile(), Precision::Int8, 1, 2, &exp, &run(vec![0.0; 100], 1, "fp32"));
        assert!(r.failures().join("\n").contains("precision: model is fp32, run asked for int8"), "{:?}", r.failures());
        // A profile without [gates.int8] refuses to judge int8 rather than invent a threshold.
        let fp32_only = Profile::parse("cortex-a53", Path::new("cortex-a53.toml"), FP32_ONLY).unwrap();
        let r = judge(&fp32_only, Precision::Int8, 0, 2, &exp, &run(vec![0.0; 100], 1, "int8"));
        let f = r.failures().join("\n");
        assert!(f.contains("x0 PSNR: profile cortex-a53 sets no int8 gate"), "{f}");
    }

    #[test]
    fn sampler_failure_is_a_failed_case() {
        let x = arr(vec![0.0; 4]);
        let exp = Expected { x_t: &x, x0: &x, x0_source: "reference".into(), host_x0: None, model_sha256: None };
        let mut failed = run(vec![0.0; 4], 1, "fp32");
        failed.failure = Some("sampler exited with 1: error: memory budget of 1.0 MiB is too small".into());
        let r = judge(&profile(), Precision::Int8, 0, 2, &exp, &failed);
        assert!(
            r.failures()[0].contains("FAIL profile cortex-a53 seed 0 int8: sampler run: ")
                && r.failures()[0].contains("too small"),
            "{:?}",
            r.failures()
        );
    }
}
