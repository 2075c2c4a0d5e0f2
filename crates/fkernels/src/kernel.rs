//! Which micro-kernel runs the products: detection at run time, and forcing one by name.

use crate::FKernelError;

/// The instruction set of the micro-kernel. All give the same bytes (see the crate docs); they
/// differ only in speed. [`Kernel::Portable`] runs anywhere and is what tests compare against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust with `f32::mul_add`.
    Portable,
    /// x86_64 with AVX2 and FMA3.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// x86_64 with AVX-512 F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// Any aarch64 (Armv8.0 NEON `fmla`).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Kernel::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Kernel::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        return Kernel::Neon;
        #[allow(unreachable_code)]
        Kernel::Portable
    }

    /// Whether this CPU can run `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => true,
        }
    }

    /// Every kernel this CPU can run, portable first.
    pub fn supported() -> Vec<Kernel> {
        Kernel::all().into_iter().filter(|k| k.is_supported()).collect()
    }

    /// Every kernel compiled for this architecture.
    fn all() -> Vec<Kernel> {
        vec![
            Kernel::Portable,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon,
        ]
    }

    /// The kernel called `name` ([`Kernel::name`]), if this CPU runs it.
    pub fn by_name(name: &str) -> Result<Kernel, FKernelError> {
        let kernel = Kernel::all()
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| FKernelError::UnknownKernel(name.to_string()))?;
        if !kernel.is_supported() {
            return Err(FKernelError::Unsupported(kernel.name()));
        }
        Ok(kernel)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => "avx512",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "neon",
        }
    }
}

/// Calls `$body($arg, ...)` compiled for `$kernel`'s instruction set (`$body` is
/// `#[inline(always)]`), so that its plain loops vectorise to that width. The compiler only
/// vectorises float operations, never fuses or reorders them, so every kernel gives the same
/// bytes.
macro_rules! vectorised {
    ($kernel:expr, $body:ident($($arg:ident: $ty:ty),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx512f")]
        #[allow(clippy::too_many_arguments)]
        fn avx512($($arg: $ty),*) {
            $body($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn avx2($($arg: $ty),*) {
            $body($($arg),*)
        }
        match $kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a stored `Kernel::Avx512` was detected or checked on this CPU.
            $crate::Kernel::Avx512 => unsafe { avx512($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a stored `Kernel::Avx2` was detected or checked on this CPU.
            $crate::Kernel::Avx2 => unsafe { avx2($($arg),*) },
            _ => $body($($arg),*),
        }
    }};
}
pub(crate) use vectorised;
