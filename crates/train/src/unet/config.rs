//! The U-Net's configuration ([`UNetConfig`]): sizes, levels, where attention goes, classes;
//! its checks, and building the network with random weights.

use burn::config::Config;
use burn::nn::{EmbeddingConfig, GroupNormConfig, LinearConfig};
use burn::tensor::backend::Backend;

use super::{conv3x3, AttentionBlock, DownLevel, ResBlock, UNet, UpLevel, GROUP_NORM_EPS};

#[derive(Config, Debug)]
pub struct UNetConfig {
    #[config(default = 3)]
    pub in_channels: usize,
    #[config(default = 32)]
    pub image_size: usize,
    #[config(default = 32)]
    pub base_channels: usize,
    #[config(default = "vec![1, 2, 2]")]
    pub channel_mults: Vec<usize>,
    #[config(default = 1)]
    pub blocks_per_level: usize,
    /// Spatial sizes (e.g. 8 = the 8x8 level) whose ResNet blocks are followed by self-attention.
    /// The middle block always has attention.
    #[config(default = "vec![8]")]
    pub attention_resolutions: Vec<usize>,
    #[config(default = 0.1)]
    pub dropout: f64,
    #[config(default = 8)]
    pub groups: usize,
    /// `Some(k)`: class-conditional with labels `0..k`, label `k` = the null class.
    #[config(default = "None")]
    pub num_classes: Option<usize>,
}

impl UNetConfig {
    /// Width of the time embedding after the MLP.
    pub fn time_dim(&self) -> usize {
        4 * self.base_channels
    }

    /// Spatial size of each level, from `image_size` down.
    pub fn resolutions(&self) -> Vec<usize> {
        (0..self.channel_mults.len()).map(|i| self.image_size >> i).collect()
    }

    pub fn validate(&self) -> Result<(), String> {
        let levels = self.channel_mults.len();
        if self.in_channels != 1 && self.in_channels != 3 {
            return Err(format!("in_channels must be 1 (grey) or 3 (RGB), got {}", self.in_channels));
        }
        if levels == 0 || self.channel_mults.contains(&0) {
            return Err(format!("channel_mults must be non-empty positive integers, got {:?}", self.channel_mults));
        }
        if levels > 8 || self.image_size == 0 || !self.image_size.is_multiple_of(1 << (levels - 1)) {
            return Err(format!(
                "image_size {} must be divisible by 2^(levels-1) = {} ({} levels)",
                self.image_size,
                1usize << (levels - 1).min(31),
                levels
            ));
        }
        if self.groups == 0 || self.base_channels == 0 || !self.base_channels.is_multiple_of(self.groups) {
            return Err(format!(
                "base_channels {} must be a positive multiple of groups {}",
                self.base_channels, self.groups
            ));
        }
        if !self.base_channels.is_multiple_of(2) {
            return Err(format!(
                "base_channels {} must be even (sin/cos halves of the time embedding)",
                self.base_channels
            ));
        }
        if self.blocks_per_level == 0 {
            return Err("blocks_per_level must be at least 1".into());
        }
        let resolutions = self.resolutions();
        if let Some(r) = self.attention_resolutions.iter().find(|r| !resolutions.contains(r)) {
            return Err(format!("attention resolution {r} is not one of the level sizes {resolutions:?}"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if self.num_classes == Some(0) {
            return Err("num_classes must be at least 1 when set".into());
        }
        Ok(())
    }

    /// Builds the network with random weights. Panics if [`UNetConfig::validate`] fails: call it
    /// first on configurations that come from users.
    pub fn init<B: Backend>(&self, device: &B::Device) -> UNet<B> {
        if let Err(e) = self.validate() {
            panic!("invalid UNetConfig: {e}");
        }
        let base = self.base_channels;
        let time_dim = self.time_dim();
        let levels = self.channel_mults.len();
        let resolutions = self.resolutions();
        let res = |ch_in, ch_out| ResBlock::new(ch_in, ch_out, time_dim, self.groups, self.dropout, device);
        let attn = |ch| AttentionBlock::new(ch, self.groups, device);

        let mut ch = base;
        let mut skip_channels = vec![ch];
        let mut down = Vec::with_capacity(levels);
        for (level, &mult) in self.channel_mults.iter().enumerate() {
            let out = base * mult;
            let with_attn = self.attention_resolutions.contains(&resolutions[level]);
            let (mut blocks, mut attentions) = (Vec::new(), Vec::new());
            for _ in 0..self.blocks_per_level {
                blocks.push(res(ch, out));
                ch = out;
                if with_attn {
                    attentions.push(attn(ch));
                }
                skip_channels.push(ch);
            }
            let downsample = (level + 1 < levels).then(|| {
                skip_channels.push(ch);
                conv3x3(ch, ch, 2, device)
            });
            down.push(DownLevel { blocks, attentions, downsample });
        }
        let mid_block1 = res(ch, ch);
        let mid_attn = attn(ch);
        let mid_block2 = res(ch, ch);
        let mut up = Vec::with_capacity(levels);
        for (level, &mult) in self.channel_mults.iter().enumerate().rev() {
            let out = base * mult;
            let with_attn = self.attention_resolutions.contains(&resolutions[level]);
            let (mut blocks, mut attentions) = (Vec::new(), Vec::new());
            for _ in 0..=self.blocks_per_level {
                let skip = skip_channels.pop().unwrap_or(0);
                blocks.push(res(ch + skip, out));
                ch = out;
                if with_attn {
                    attentions.push(attn(ch));
                }
            }
            let upsample = (level > 0).then(|| conv3x3(ch, ch, 1, device));
            up.push(UpLevel { blocks, attentions, upsample });
        }
        UNet {
            time_linear1: LinearConfig::new(base, time_dim).init(device),
            time_linear2: LinearConfig::new(time_dim, time_dim).init(device),
            class_embedding: self.num_classes.map(|k| EmbeddingConfig::new(k + 1, time_dim).init(device)),
            conv_in: conv3x3(self.in_channels, base, 1, device),
            down,
            mid_block1,
            mid_attn,
            mid_block2,
            up,
            norm_out: GroupNormConfig::new(self.groups, ch).with_epsilon(GROUP_NORM_EPS).init(device),
            conv_out: conv3x3(ch, self.in_channels, 1, device),
            base_channels: base,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_inconsistent_configs() {
        assert!(UNetConfig::new().validate().is_ok());
        assert!(UNetConfig::new().with_image_size(30).validate().is_err());
        assert!(UNetConfig::new().with_base_channels(36).validate().is_err());
        assert!(UNetConfig::new().with_attention_resolutions(vec![12]).validate().is_err());
        assert!(UNetConfig::new().with_channel_mults(vec![]).validate().is_err());
        assert!(UNetConfig::new().with_num_classes(Some(0)).validate().is_err());
        assert!(UNetConfig::new().with_dropout(1.0).validate().is_err());
        assert!(UNetConfig::new().with_in_channels(2).validate().is_err());
    }
}
