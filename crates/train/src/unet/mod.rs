//! The denoiser: a DDPM U-Net (Ho et al. 2020; the layout of diffusers' `UNet2DModel`).
//!
//! conv_in → down levels (ResNet blocks, optional self-attention, stride-2 conv) → middle
//! (ResNet, attention, ResNet) → up levels (ResNet blocks on `[h, skip]` concatenations, nearest
//! x2 + conv) → GroupNorm, SiLU, conv_out. The timestep enters through a sinusoidal embedding
//! and an MLP, added inside every ResNet block; an optional class embedding is added to it.
//!
//! Its configuration and construction are in [`config`]. Every operation here has an exact
//! counterpart in `crate::export`; the helpers that fix
//! constants (frequencies, attention scale, epsilon) are shared so both compute the same f32s.

mod config;

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, Embedding, GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

pub use config::UNetConfig;

/// GroupNorm epsilon (diffusers' default; burn's default too).
pub const GROUP_NORM_EPS: f64 = 1e-5;

/// 3x3 convolution with padding 1 (stride 2 halves the size: the downsampler).
fn conv3x3<B: Backend>(ch_in: usize, ch_out: usize, stride: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([ch_in, ch_out], [3, 3])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

/// Frequencies of the sinusoidal timestep embedding of width `dim`: `10000^(-i/(dim/2))`,
/// computed in f64 from exactly representable inputs and rounded once to f32.
pub fn timestep_frequencies(dim: usize) -> Vec<f32> {
    let half = dim / 2;
    (0..half).map(|i| libm::exp(-libm::log(10000.0) * i as f64 / half as f64) as f32).collect()
}

/// `1/sqrt(d)`, the attention logit scale, rounded once to f32.
pub fn attention_scale(channels: usize) -> f32 {
    (1.0 / (channels as f64).sqrt()) as f32
}

/// GroupNorm, SiLU, conv; + projected time embedding; GroupNorm, SiLU, dropout, conv; + skip.
#[derive(Module, Debug)]
pub struct ResBlock<B: Backend> {
    pub(crate) norm1: GroupNorm<B>,
    pub(crate) conv1: Conv2d<B>,
    pub(crate) time_proj: Linear<B>,
    pub(crate) norm2: GroupNorm<B>,
    pub(crate) dropout: Dropout,
    pub(crate) conv2: Conv2d<B>,
    /// 1x1 conv when the channel count changes.
    pub(crate) skip: Option<Conv2d<B>>,
}

impl<B: Backend> ResBlock<B> {
    fn new(ch_in: usize, ch_out: usize, time_dim: usize, groups: usize, dropout: f64, device: &B::Device) -> Self {
        ResBlock {
            norm1: GroupNormConfig::new(groups, ch_in).with_epsilon(GROUP_NORM_EPS).init(device),
            conv1: conv3x3(ch_in, ch_out, 1, device),
            time_proj: LinearConfig::new(time_dim, ch_out).init(device),
            norm2: GroupNormConfig::new(groups, ch_out).with_epsilon(GROUP_NORM_EPS).init(device),
            dropout: DropoutConfig::new(dropout).init(),
            conv2: conv3x3(ch_out, ch_out, 1, device),
            skip: (ch_in != ch_out).then(|| Conv2dConfig::new([ch_in, ch_out], [1, 1]).init(device)),
        }
    }

    /// `temb_act` is `silu(time embedding)`, `[N, time_dim]`.
    fn forward(&self, x: Tensor<B, 4>, temb_act: Tensor<B, 2>) -> Tensor<B, 4> {
        let h = self.conv1.forward(silu(self.norm1.forward(x.clone())));
        let [n, c] = [h.dims()[0], h.dims()[1]];
        let h = h + self.time_proj.forward(temb_act).reshape([n, c, 1, 1]);
        let h = self.conv2.forward(self.dropout.forward(silu(self.norm2.forward(h))));
        let skip = match &self.skip {
            Some(conv) => conv.forward(x),
            None => x,
        };
        skip + h
    }
}

/// Single-head self-attention over the H*W positions, with a residual connection.
#[derive(Module, Debug)]
pub struct AttentionBlock<B: Backend> {
    pub(crate) norm: GroupNorm<B>,
    pub(crate) query: Linear<B>,
    pub(crate) key: Linear<B>,
    pub(crate) value: Linear<B>,
    pub(crate) proj: Linear<B>,
}

impl<B: Backend> AttentionBlock<B> {
    fn new(ch: usize, groups: usize, device: &B::Device) -> Self {
        AttentionBlock {
            norm: GroupNormConfig::new(groups, ch).with_epsilon(GROUP_NORM_EPS).init(device),
            query: LinearConfig::new(ch, ch).init(device),
            key: LinearConfig::new(ch, ch).init(device),
            value: LinearConfig::new(ch, ch).init(device),
            proj: LinearConfig::new(ch, ch).init(device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let tokens = self.norm.forward(x.clone()).reshape([n, c, h * w]).swap_dims(1, 2);
        let q = self.query.forward(tokens.clone());
        let k = self.key.forward(tokens.clone());
        let v = self.value.forward(tokens);
        let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(attention_scale(c));
        let out = self.proj.forward(softmax(scores, 2).matmul(v));
        x + out.swap_dims(1, 2).reshape([n, c, h, w])
    }
}

#[derive(Module, Debug)]
pub struct DownLevel<B: Backend> {
    pub(crate) blocks: Vec<ResBlock<B>>,
    /// Empty, or one per block (applied after it).
    pub(crate) attentions: Vec<AttentionBlock<B>>,
    /// Stride-2 conv; absent at the last level.
    pub(crate) downsample: Option<Conv2d<B>>,
}

#[derive(Module, Debug)]
pub struct UpLevel<B: Backend> {
    /// `blocks_per_level + 1` blocks, each fed `[h, skip]` concatenated on channels.
    pub(crate) blocks: Vec<ResBlock<B>>,
    pub(crate) attentions: Vec<AttentionBlock<B>>,
    /// Conv after nearest x2; absent at the top level.
    pub(crate) upsample: Option<Conv2d<B>>,
}

#[derive(Module, Debug)]
pub struct UNet<B: Backend> {
    pub(crate) time_linear1: Linear<B>,
    pub(crate) time_linear2: Linear<B>,
    pub(crate) class_embedding: Option<Embedding<B>>,
    pub(crate) conv_in: Conv2d<B>,
    pub(crate) down: Vec<DownLevel<B>>,
    pub(crate) mid_block1: ResBlock<B>,
    pub(crate) mid_attn: AttentionBlock<B>,
    pub(crate) mid_block2: ResBlock<B>,
    pub(crate) up: Vec<UpLevel<B>>,
    pub(crate) norm_out: GroupNorm<B>,
    pub(crate) conv_out: Conv2d<B>,
    pub(crate) base_channels: usize,
}

/// Nearest-neighbour x2 upsampling as broadcast + reshape (each pixel becomes a 2x2 block),
/// exactly ONNX `Resize(mode=nearest, asymmetric, floor)` with scale 2.
pub(crate) fn upsample_nearest2x<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    x.reshape([n, c, h, 1, w, 1]).expand([n, c, h, 2, w, 2]).reshape([n, c, 2 * h, 2 * w])
}

impl<B: Backend> UNet<B> {
    /// Predicts the model target (e.g. the noise) for `sample` `[N, C, H, W]` at the float
    /// training timesteps `timestep` `[N]`. `class_labels` `[N]` (in `0..=num_classes`) is used
    /// only by a class-conditional model; `None` there means the null class.
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timestep: Tensor<B, 1>,
        class_labels: Option<Tensor<B, 1, Int>>,
    ) -> Tensor<B, 4> {
        let device = sample.device();
        let n = sample.dims()[0];
        let freqs = timestep_frequencies(self.base_channels);
        let half = freqs.len();
        let freqs = Tensor::<B, 1>::from_data(TensorData::new(freqs, [half]), &device).reshape([1, half]);
        let args = timestep.reshape([n, 1]) * freqs;
        let temb = Tensor::cat(vec![args.clone().cos(), args.sin()], 1);
        let mut temb = self.time_linear2.forward(silu(self.time_linear1.forward(temb)));
        if let Some(embedding) = &self.class_embedding {
            let null_class = embedding.weight.dims()[0] as i64 - 1;
            let labels = class_labels.unwrap_or_else(|| Tensor::<B, 1, Int>::full([n], null_class, &device));
            temb = temb + embedding.weight.val().select(0, labels);
        }
        let temb_act = silu(temb);

        let mut h = self.conv_in.forward(sample);
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (i, block) in level.blocks.iter().enumerate() {
                h = block.forward(h, temb_act.clone());
                if let Some(attn) = level.attentions.get(i) {
                    h = attn.forward(h);
                }
                skips.push(h.clone());
            }
            if let Some(conv) = &level.downsample {
                h = conv.forward(h);
                skips.push(h.clone());
            }
        }
        h = self.mid_block1.forward(h, temb_act.clone());
        h = self.mid_attn.forward(h);
        h = self.mid_block2.forward(h, temb_act.clone());
        for level in &self.up {
            for (i, block) in level.blocks.iter().enumerate() {
                if let Some(skip) = skips.pop() {
                    h = Tensor::cat(vec![h, skip], 1);
                }
                h = block.forward(h, temb_act.clone());
                if let Some(attn) = level.attentions.get(i) {
                    h = attn.forward(h);
                }
            }
            if let Some(conv) = &level.upsample {
                h = conv.forward(upsample_nearest2x(h));
            }
        }
        self.conv_out.forward(silu(self.norm_out.forward(h)))
    }

    /// Number of trainable scalars.
    pub fn num_params(&self) -> usize {
        Module::num_params(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn forward_keeps_the_sample_shape() {
        let device = Default::default();
        let config = UNetConfig::new()
            .with_in_channels(1)
            .with_image_size(8)
            .with_base_channels(8)
            .with_channel_mults(vec![1, 2])
            .with_attention_resolutions(vec![4])
            .with_groups(4)
            .with_num_classes(Some(2));
        let model = config.init::<Flex>(&device);
        let x = Tensor::<Flex, 4>::ones([2, 1, 8, 8], &device);
        let t = Tensor::<Flex, 1>::from_floats([0.0, 999.0], &device);
        let y = model.forward(x.clone(), t.clone(), None);
        assert_eq!(y.dims(), [2, 1, 8, 8]);
        let labels = Tensor::<Flex, 1, Int>::from_ints([2, 2], &device);
        let y_null = model.forward(x.clone(), t.clone(), Some(labels));
        let y0 = model.forward(x, t, Some(Tensor::<Flex, 1, Int>::from_ints([0, 0], &device)));
        let same = (y.clone() - y_null).abs().max().into_scalar();
        let differs = (y - y0).abs().max().into_scalar();
        assert_eq!(same, 0.0, "no labels must mean the null class");
        assert!(differs > 0.0, "labels must change the output");
    }

    #[test]
    fn nearest_upsampling_repeats_pixels() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::from_floats([[[[1.0, 2.0], [3.0, 4.0]]]], &device);
        let y: Vec<f32> = upsample_nearest2x(x).into_data().to_vec().unwrap();
        assert_eq!(y, vec![1., 1., 2., 2., 1., 1., 2., 2., 3., 3., 4., 4., 3., 3., 4., 4.]);
    }
}
