//! Findings already reported and not yet fixed in the code under test. A run still saves and
//! lists them, but they do not fail it, so CI stays green on an open bug while its regression
//! test (`tests/regressions.rs`, `#[ignore]`d until the fix) waits. Fixing the bug means
//! removing its entry here and the `#[ignore]` there.

use crate::findings::{Finding, Kind};

/// One open bug: the findings it explains and the test that reproduces it.
#[derive(Debug)]
pub struct Known {
    pub target: &'static str,
    pub kind: Kind,
    /// A piece of the finding's message (a panic's location, an abort's stderr).
    pub needle: &'static str,
    /// The regression test in `tests/regressions.rs`.
    pub test: &'static str,
}

pub const KNOWN: &[Known] = &[];

/// The open bug `finding` is an instance of, if any.
pub fn lookup(finding: &Finding) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.target == finding.target && k.kind == finding.kind && finding.message.contains(k.needle))
}
