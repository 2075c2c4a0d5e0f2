//! Running a [`QConv2d`]: quantise the input if it is f32, pack it into columns a band of output
//! rows at a time (or, for a kernel that reads windows in place, only pad it), and hand the
//! columns to the kernel, on this thread or as parallel jobs.

use std::cell::RefCell;

use super::QConv2d;
use crate::arith;
use crate::error::QConvError;
use crate::io::{Addend, AddendAt, Input, Output, OutputMut};
use crate::kernels;
use crate::pack::{self, pack_columns_for, Scratch};
use crate::params::Epilogue;
use crate::ParallelFor;

thread_local! {
    /// Packing buffers, reused by every call on this thread (they are as large as the biggest
    /// layer's column matrix; allocating them per call would page-fault on every layer).
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

impl QConv2d {
    /// Runs on `x` (`[n][C][h][w]`) and returns `[n][M][ho][wo]` with `(ho, wo)`.
    pub fn run(&self, x: Input<'_>, n: usize, h: usize, w: usize) -> Result<(Output, usize, usize), QConvError> {
        self.run_with(x, n, h, w, None)
    }

    /// [`QConv2d::run`] with each image's bands of output rows computed as independent jobs of
    /// `parallel`. The input is quantised and padded once per image on the calling thread; each
    /// job packs its band's columns and computes all output channels for it. The output bytes
    /// are the same whatever the threads do (every output value is computed by exactly one
    /// job, with the same arithmetic).
    pub fn run_parallel(
        &self,
        x: Input<'_>,
        n: usize,
        h: usize,
        w: usize,
        parallel: ParallelFor<'_>,
    ) -> Result<(Output, usize, usize), QConvError> {
        self.run_with(x, n, h, w, Some(parallel))
    }

    /// A 1x1, stride-1, unpadded convolution run as the matrix product `x[pixels][C] · wᵀ`:
    /// `x` is channels-last (e.g. attention tokens), the result is `[M][pixels]`. Same bytes as
    /// [`QConv2d::run`] on the transposed input, without building the transposed image.
    pub fn run_channels_last(&self, x: Input<'_>, pixels: usize) -> Result<Output, QConvError> {
        self.channels_last_with(x, pixels, None)
    }

    /// [`QConv2d::run_channels_last`] with bands of pixels computed as independent jobs of
    /// `parallel` (each packs its own columns); the same bytes.
    pub fn run_channels_last_parallel(
        &self,
        x: Input<'_>,
        pixels: usize,
        parallel: ParallelFor<'_>,
    ) -> Result<Output, QConvError> {
        self.channels_last_with(x, pixels, Some(parallel))
    }

    /// [`QConv2d::run`] (or [`QConv2d::run_parallel`] with `parallel`) into `out`, which must
    /// hold `n · M · ho · wo` values of this convolution's output type: a buffer the caller
    /// owns (a tensor's) is written in place, with no zeroed result to allocate and copy. Returns
    /// `(ho, wo)`.
    pub fn run_into(
        &self,
        x: Input<'_>,
        dims: [usize; 3],
        parallel: Option<ParallelFor<'_>>,
        out: OutputMut<'_>,
    ) -> Result<(usize, usize), QConvError> {
        self.run_into_adding(x, dims, parallel, None, out)
    }

    /// [`QConv2d::run_into`] with `addend` added to each f32 output after its bias, as each
    /// block of output channels is written (a residual, or a timestep embedding's value per
    /// channel): the bytes of a separate add, without reading the output back from memory.
    pub fn run_into_adding(
        &self,
        x: Input<'_>,
        [n, h, w]: [usize; 3],
        parallel: Option<ParallelFor<'_>>,
        addend: Option<Addend<'_>>,
        out: OutputMut<'_>,
    ) -> Result<(usize, usize), QConvError> {
        let g = &self.geometry;
        let want = n * g.in_channels * h * w;
        if x.len() != want {
            return Err(QConvError::InputLen { got: x.len(), want });
        }
        let Some((ho, wo)) = g.output_size(h, w) else {
            return Err(QConvError::TooSmall { h, w, kh: g.kernel_h, kw: g.kernel_w });
        };
        self.check_output(&out, n * g.out_channels * ho * wo)?;
        if let Some(addend) = &addend {
            if !self.outputs_f32() {
                return Err(QConvError::AddendOnU8);
            }
            let (values, per_image) = addend.values_per_image(g.out_channels, ho * wo);
            if values.len() != per_image && values.len() != n * per_image {
                return Err(QConvError::AddendLen { got: values.len(), per_image, all: n * per_image });
            }
        }
        SCRATCH.with_borrow_mut(|scratch| self.run_images(x, [n, h, w], scratch, (parallel, addend), out))
    }

    /// [`QConv2d::run_channels_last`] (or its parallel form) into `out`, `[M][pixels]` values
    /// of this convolution's output type, as [`QConv2d::run_into`].
    pub fn run_channels_last_into(
        &self,
        x: Input<'_>,
        pixels: usize,
        parallel: Option<ParallelFor<'_>>,
        out: OutputMut<'_>,
    ) -> Result<(), QConvError> {
        let g = &self.geometry;
        let pads = [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right];
        if (g.kernel_h, g.kernel_w, g.stride_h, g.stride_w) != (1, 1, 1, 1) || pads != [0; 4] {
            return Err(QConvError::NotPointwise);
        }
        let want = pixels * g.in_channels;
        if x.len() != want {
            return Err(QConvError::InputLen { got: x.len(), want });
        }
        self.check_output(&out, g.out_channels * pixels)?;
        SCRATCH.with_borrow_mut(|scratch| self.channels_last_images(x, pixels, scratch, parallel, out))
    }

    /// Checks that `out` holds `want` values of this convolution's output type.
    fn check_output(&self, out: &OutputMut<'_>, want: usize) -> Result<(), QConvError> {
        let got = match out {
            OutputMut::U8(_) => "u8",
            OutputMut::F32(_) => "f32",
        };
        let expected = if self.outputs_f32() { "f32" } else { "u8" };
        if got != expected {
            return Err(QConvError::OutputType { got, want: expected });
        }
        if out.len() != want {
            return Err(QConvError::OutputLen { got: out.len(), want });
        }
        Ok(())
    }

    fn channels_last_with(
        &self,
        x: Input<'_>,
        pixels: usize,
        parallel: Option<ParallelFor<'_>>,
    ) -> Result<Output, QConvError> {
        let mut output = self.new_output(self.geometry.out_channels * pixels);
        self.run_channels_last_into(x, pixels, parallel, output.as_mut())?;
        Ok(output)
    }

    /// The product of a checked channels-last call into `out`, on `scratch`.
    fn channels_last_images(
        &self,
        x: Input<'_>,
        pixels: usize,
        scratch: &mut Scratch,
        parallel: Option<ParallelFor<'_>>,
        mut out: OutputMut<'_>,
    ) -> Result<(), QConvError> {
        let g = &self.geometry;
        let mut quantized = std::mem::take(&mut scratch.quantized);
        let x = match self.quantized(x, 1, &mut quantized) {
            Ok(x) => x,
            Err(e) => {
                scratch.quantized = quantized;
                return Err(e);
            }
        };
        let signed = self.kernel.signed_activations();
        let out = image_out(&mut out, 0..g.out_channels * pixels);
        let (weights, finish) = (&self.weights, self.finish(None));
        match parallel {
            // Enough output channels: the columns are packed once and the jobs split the
            // channels, each writing its rows in place. Bands of pixels each computed every
            // channel into a buffer of their own and copied it into place: at 256 tokens x 256
            // channels that zeroing and copying outweighed the second thread's share.
            Some(par) if kernels::splits_over_blocks(weights) => {
                let cols = pack::pack_channels_last(g, x, pixels, self.x_zero, signed, &mut scratch.columns);
                kernels::gemm_blocks_parallel(self.kernel, weights, cols, finish, out, par);
            }
            Some(par) if pixels > pack::BAND_PIXELS => {
                let bands = pack::ChannelsLastBands { g, rows: x, pixels, x_zero: self.x_zero, signed };
                kernels::gemm_bands_parallel(self.kernel, weights, &bands, finish, out, par);
            }
            _ => {
                let cols = pack::pack_channels_last(g, x, pixels, self.x_zero, signed, &mut scratch.columns);
                kernels::gemm(self.kernel, weights, cols, finish, out);
            }
        }
        scratch.quantized = quantized;
        Ok(())
    }

    /// `x` as u8: as given, or quantised into `buffer`. `inner` is the distance between
    /// channels in `x` (H·W for NCHW, 1 for channels-last), for the input multipliers.
    fn quantized<'a>(&self, x: Input<'a>, inner: usize, buffer: &'a mut Vec<u8>) -> Result<&'a [u8], QConvError> {
        match (x, &self.x_multipliers) {
            (Input::U8(x), None) => Ok(x),
            (Input::U8(_), Some(_)) => Err(QConvError::MultipliedU8),
            (Input::F32(x), None) => {
                arith::quantize_slice(self.kernel, x, 1.0 / self.x_scale, self.x_zero, buffer);
                Ok(&buffer[..])
            }
            (Input::F32(x), Some(m)) => {
                arith::quantize_slice_multiplied(self.kernel, x, m, inner, 1.0 / self.x_scale, self.x_zero, buffer);
                Ok(&buffer[..])
            }
        }
    }

    fn new_output(&self, len: usize) -> Output {
        match self.epilogue {
            Epilogue::Requantize { .. } => Output::U8(vec![0u8; len]),
            Epilogue::Dequantize { .. } => Output::F32(vec![0f32; len]),
        }
    }

    /// [`QConv2d::run`] and [`QConv2d::run_parallel`]: a zeroed result, written by
    /// [`QConv2d::run_into`].
    fn run_with(
        &self,
        x: Input<'_>,
        n: usize,
        h: usize,
        w: usize,
        parallel: Option<ParallelFor<'_>>,
    ) -> Result<(Output, usize, usize), QConvError> {
        // No result where the window does not fit: `run_into` reports the input first.
        let len = self.geometry.output_size(h, w).map_or(0, |(ho, wo)| n * self.geometry.out_channels * ho * wo);
        let mut output = self.new_output(len);
        let (ho, wo) = self.run_into(x, [n, h, w], parallel, output.as_mut())?;
        Ok((output, ho, wo))
    }

    /// The images of a checked call into `out`, on `scratch`.
    fn run_images(
        &self,
        x: Input<'_>,
        [n, h, w]: [usize; 3],
        scratch: &mut Scratch,
        (parallel, addend): (Option<ParallelFor<'_>>, Option<Addend<'_>>),
        mut out: OutputMut<'_>,
    ) -> Result<(usize, usize), QConvError> {
        let g = &self.geometry;
        let (ho, wo) = g.output_size(h, w).expect("checked by run_into");
        let mut quantized = std::mem::take(&mut scratch.quantized);
        let x = match self.quantized(x, h * w, &mut quantized) {
            Ok(x) => x,
            Err(e) => {
                scratch.quantized = quantized;
                return Err(e);
            }
        };
        let (image_len, p) = (g.in_channels * h * w, ho * wo);
        // The columns are packed a band of output rows at a time (a small buffer, see
        // `pack::band_rows`); split over threads, each band is a job.
        let band = pack::band_rows(g, ho, wo);
        for i in 0..n {
            let image = &x[i * image_len..][..image_len];
            let range = i * g.out_channels * p..(i + 1) * g.out_channels * p;
            let add = addend.map(|addend| AddendAt { addend, image_first: range.start, plane: p, pixel_offset: 0 });
            let finish = self.finish(add.as_ref());
            match parallel {
                // One band (a small image), or windows read in place (nothing to pack per band):
                // the columns are made here and the output channels are split over the jobs
                // instead, each reading only its own share of the weights (which come from
                // memory at every evaluation of a large net). With windows, bands remain for
                // layers with too few channels to make two jobs.
                Some(par) if band >= ho || (self.reads_windows(w) && kernels::splits_over_blocks(&self.weights)) => {
                    let cols = self.image_columns(image, h, w, scratch);
                    let out = image_out(&mut out, range.clone());
                    kernels::gemm_blocks_parallel(self.kernel, &self.weights, cols, finish, out, par);
                }
                None if self.reads_windows(w) => {
                    let cols = self.image_columns(image, h, w, scratch);
                    let out = image_out(&mut out, range.clone());
                    kernels::gemm(self.kernel, &self.weights, cols, finish, out);
                }
                None => {
                    for first in (0..ho).step_by(band) {
                        let rows = band.min(ho - first);
                        let image = (first == 0).then_some(image);
                        let cols = pack_columns_for(self.kernel, g, image, h, w, self.x_zero, (first, rows), scratch);
                        kernels::gemm(self.kernel, &self.weights, cols, finish, image_out(&mut out, range.clone()));
                    }
                }
                Some(par) => {
                    pack::pad_image_for(self.kernel, g, image, h, w, self.x_zero, &mut scratch.padded);
                    let packer = pack::BandPacker {
                        kernel: self.kernel,
                        g,
                        h,
                        w,
                        x_zero: self.x_zero,
                        band,
                        ho,
                        padded: scratch.padded.as_slice(),
                    };
                    kernels::gemm_bands_parallel(
                        self.kernel,
                        &self.weights,
                        &packer,
                        finish,
                        image_out(&mut out, range.clone()),
                        par,
                    );
                }
            }
        }
        scratch.quantized = quantized;
        Ok((ho, wo))
    }
}

impl QConv2d {
    /// The offsets and epilogue of this convolution, with `add` on the call's output.
    fn finish<'a>(&'a self, add: Option<&'a AddendAt<'a>>) -> kernels::Finish<'a> {
        kernels::Finish { offsets: &self.offsets, epilogue: &self.epilogue, add }
    }

    /// Whether this kernel reads the windows of this convolution on a `w`-wide input in place
    /// from the padded image, with no columns packed (see `pack::Windows`).
    fn reads_windows(&self, w: usize) -> bool {
        self.kernel.reads_windows() && pack::reads_windows(&self.geometry, w)
    }

    /// The columns of every output row of one image: its windows in the padded image where the
    /// kernel reads them in place, else packed.
    fn image_columns<'s>(&self, image: &[u8], h: usize, w: usize, scratch: &'s mut Scratch) -> pack::Columns<'s> {
        let g = &self.geometry;
        let (ho, _) = g.output_size(h, w).expect("checked by run_with");
        if self.reads_windows(w) {
            pack::pad_image_for(self.kernel, g, image, h, w, self.x_zero, &mut scratch.padded);
            return pack::windows(g, h, w, (0, ho), scratch.padded.as_slice());
        }
        pack_columns_for(self.kernel, g, Some(image), h, w, self.x_zero, (0, ho), scratch)
    }
}

/// One image's part of the output.
fn image_out<'o>(output: &'o mut OutputMut<'_>, range: std::ops::Range<usize>) -> kernels::Out<'o> {
    match output {
        OutputMut::U8(o) => kernels::Out::U8(&mut o[range]),
        OutputMut::F32(o) => kernels::Out::F32(&mut o[range]),
    }
}
