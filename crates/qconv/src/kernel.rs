//! Which dot-product kernel a CPU runs: detection at run time, and what each kernel needs.

/// Which inner loop runs the dot products (all give the same bytes). On aarch64 every CPU has
/// at least `Kernel::Neon`, on x86_64 nearly every one since 2013 `Kernel::Avx2` (variants of
/// one architecture only); [`Kernel::Portable`] is there for tests and other targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Plain Rust, for any CPU.
    Portable,
    /// x86_64 with AVX-512 F/BW/VNNI (`vpdpbusd`).
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// x86_64 with AVX2 and AVX-VNNI (the VEX `vpdpbusd`, 256 bits).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// x86_64 with AVX2 (`vpmaddwd` on operands widened to 16 bits).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// aarch64 with the Armv8.2 dot-product extension (`sdot`).
    #[cfg(target_arch = "aarch64")]
    ArmDotProd,
    /// Any aarch64 (Armv8.0 NEON: `smull`/`smlal`/`sadalp`).
    #[cfg(target_arch = "aarch64")]
    Neon,
}

impl Kernel {
    /// The fastest kernel this CPU supports.
    pub fn detect() -> Kernel {
        Kernel::all().iter().rev().copied().find(|k| k.is_supported()).unwrap_or(Kernel::Portable)
    }

    /// Whether this CPU can run `self` (the portable kernel always can).
    pub fn is_supported(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("avxvnni"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "aarch64")]
            Kernel::ArmDotProd => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => true,
        }
    }

    /// Every kernel of this target, supported by this CPU or not, slowest first
    /// ([`Kernel::detect`] takes the last one this CPU supports).
    pub fn all() -> &'static [Kernel] {
        #[cfg(target_arch = "x86_64")]
        let all = &[Kernel::Portable, Kernel::Avx2, Kernel::AvxVnni, Kernel::Avx512Vnni];
        #[cfg(target_arch = "aarch64")]
        let all = &[Kernel::Portable, Kernel::Neon, Kernel::ArmDotProd];
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let all = &[Kernel::Portable];
        all
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Vnni => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "aarch64")]
            Kernel::ArmDotProd => "arm-dotprod",
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => "arm-neon",
        }
    }

    /// The dot-product instructions multiply signed by signed bytes on Arm, so that kernel
    /// sees activations shifted by -128 (`x ^ 0x80`); the shift is folded into the offsets.
    pub(crate) fn signed_activations(self) -> bool {
        #[cfg(target_arch = "aarch64")]
        if self == Kernel::ArmDotProd || self == Kernel::Neon {
            return true;
        }
        false
    }

    /// Whether the kernel can read a stride-1 convolution's windows in place from the padded
    /// image ([`crate::pack::Windows`]) instead of packed columns: the AVX-512 VNNI kernel,
    /// which loads a tile's 16 pixels as one unaligned 64-byte vector.
    pub(crate) fn reads_windows(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if self == Kernel::Avx512Vnni {
            return true;
        }
        false
    }
}
