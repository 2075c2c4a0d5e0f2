//! What every `sampler` run must do, whatever its arguments (the CLI's error contract, see
//! `crates/cli`): exit 0, 1 or 2; a failure is one line on stderr, never a panic's report or an
//! "internal error"; and no file is left behind that no argument asked for (a temporary file of
//! an atomic write, say).

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitStatus;

/// The exit code, after checking it and stderr against the contract (a violation panics: it is
/// a finding).
pub(super) fn check_exit(status: ExitStatus, stderr: &str) -> i32 {
    let Some(code) = status.code() else {
        panic!("sampler was killed by signal {:?}; stderr: {}", status.signal(), tail(stderr));
    };
    assert!(matches!(code, 0..=2), "sampler exited with {code}; stderr: {}", tail(stderr));
    assert!(!stderr.contains("panicked"), "sampler panicked: {}", tail(stderr));
    if code != 0 {
        let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
        assert_eq!(lines, 1, "exit {code} with {lines} lines on stderr: {}", tail(stderr));
        assert!(!stderr.contains("internal error"), "exit {code} with an internal error: {}", tail(stderr));
    }
    code
}

/// The last 2000 characters of `text` (a message needs no more).
fn tail(text: &str) -> &str {
    let start = text.len().saturating_sub(2000);
    let start = (start..=text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    &text[start..]
}

/// Panics if `dir` holds a file that is neither a fixture nor named by an argument (as a word,
/// or the value of `--flag=value`), nor one of the `OUT-k.ext` files `--separate` derives from
/// an argument `OUT.ext`.
pub(super) fn check_leftovers(dir: &Path, fixtures: &[&str], words: &[OsString]) {
    let named: Vec<PathBuf> = words.iter().flat_map(|w| candidate_paths(w.as_bytes())).map(normalise).collect();
    let fixtures: Vec<PathBuf> = fixtures.iter().map(PathBuf::from).collect();
    for file in files_under(dir, Path::new("")) {
        let known =
            fixtures.contains(&file) || named.contains(&file) || named.iter().any(|n| is_separate_image(n, &file));
        assert!(known, "the run left {} behind, which no argument names (arguments: {words:?})", file.display());
    }
}

/// Every file (not folder) under `dir/rel`, relative to `dir`.
fn files_under(dir: &Path, rel: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(rel)) else { return Vec::new() };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = rel.join(entry.file_name());
        match entry.file_type() {
            Ok(t) if t.is_dir() => files.extend(files_under(dir, &path)),
            _ => files.push(path),
        }
    }
    files
}

/// The word itself and, for `--flag=value`, the value.
fn candidate_paths(word: &[u8]) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from(std::ffi::OsStr::from_bytes(word))];
    if let (true, Some(eq)) = (word.starts_with(b"--"), word.iter().position(|&b| b == b'=')) {
        paths.push(PathBuf::from(std::ffi::OsStr::from_bytes(&word[eq + 1..])));
    }
    paths
}

/// `./a//b` as `a/b`, so an argument compares equal to the file it created.
fn normalise(path: PathBuf) -> PathBuf {
    path.components().filter(|c| !matches!(c, Component::CurDir)).collect()
}

/// `file` is `OUT-k.ext` beside `out` = `OUT.ext` (or `OUT-k` for an `OUT` without extension).
fn is_separate_image(out: &Path, file: &Path) -> bool {
    if out.parent() != file.parent() {
        return false;
    }
    let (Some(stem), Some(name)) = (out.file_stem(), file.file_name()) else { return false };
    let ext = out.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let name = name.to_string_lossy();
    let Some(rest) = name.strip_prefix(&format!("{}-", stem.to_string_lossy())) else { return false };
    rest.strip_suffix(&ext).is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separate_images_are_numbered_beside_their_output() {
        let yes = |out: &str, file: &str| is_separate_image(Path::new(out), Path::new(file));
        assert!(yes("out.png", "out-0.png") && yes("dir/o.png", "dir/o-12.png") && yes("out", "out-3"));
        assert!(!yes("out.png", "out-.png") && !yes("out.png", "dir/out-1.png") && !yes("out.png", "out-1.npy"));
    }

    #[test]
    fn a_file_no_argument_names_is_a_leftover() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        for f in ["fixture", "out.png", "out-1.png", "d/raw.npy"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let words: Vec<OsString> = ["--save-raw=./d/raw.npy", "out.png"].map(OsString::from).to_vec();
        check_leftovers(dir.path(), &["fixture"], &words);
        std::fs::write(dir.path().join(".tmp123"), b"").unwrap();
        let leftover = std::panic::catch_unwind(|| check_leftovers(dir.path(), &["fixture"], &words));
        assert!(leftover.is_err(), "a temporary file went unnoticed");
    }
}
