//! Who made a reference, with what, when: the facts `reference.json` records so a consumer can
//! tell whether it compares the same weights, and regenerate the files.

/// The burn version this crate is built against (pinned `=` in Cargo.toml; a unit test keeps
/// the two in step).
pub const BURN_VERSION: &str = "0.21.0";

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format_utc(secs)
}

/// Seconds since the Unix epoch to ISO 8601 (H. Hinnant's days-to-civil algorithm).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

/// Name of CUDA device 0 from the driver (the device burn's `CudaDevice::default()` uses), or
/// `None` when there is no driver or it does not answer.
pub fn gpu_name() -> Option<String> {
    // SAFETY: libcuda.so.1 is the NVIDIA driver API; the three symbols are called with their
    // documented C signatures (CUresult is int, CUdevice is int) and a buffer whose length we pass.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").ok()?;
        let init: libloading::Symbol<unsafe extern "C" fn(u32) -> i32> = lib.get(b"cuInit\0").ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn(*mut i32, i32) -> i32> = lib.get(b"cuDeviceGet\0").ok()?;
        let name: libloading::Symbol<unsafe extern "C" fn(*mut std::ffi::c_char, i32, i32) -> i32> =
            lib.get(b"cuDeviceGetName\0").ok()?;
        if init(0) != 0 {
            return None;
        }
        let mut dev = 0i32;
        if get(&mut dev, 0) != 0 {
            return None;
        }
        let mut buf = [0 as std::ffi::c_char; 256];
        if name(buf.as_mut_ptr(), buf.len() as i32, dev) != 0 {
            return None;
        }
        let s = std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy().trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

/// Quotes one argument for a POSIX shell, only when it needs it.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// A copy-pasteable command line.
pub fn command_line<S: AsRef<str>>(args: &[S]) -> String {
    args.iter().map(|a| shell_quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn quoting() {
        assert_eq!(command_line(&["train", "--out", "a b", "it's", "x,y"]), r"train --out 'a b' 'it'\''s' x,y");
    }

    #[test]
    fn burn_version_matches_the_manifest_pin() {
        let manifest = include_str!("../../Cargo.toml");
        let pin = format!("burn = {{ version = \"={BURN_VERSION}\"");
        assert!(manifest.contains(&pin), "update BURN_VERSION to the burn version pinned in Cargo.toml");
    }
}
