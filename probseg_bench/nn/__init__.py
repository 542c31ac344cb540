"""Building blocks a model-plugin author reuses: the U-Net feature extractor, the axis-aligned convolutional
Gaussian encoder (prior / posterior), the latent-injection head (Kohl et al. 2018), and the flattened layout of
hierarchical latents (``levels``)."""

from probseg_bench.nn.gaussian import LOG_SIGMA_BOUND, AxisAlignedConvGaussian
from probseg_bench.nn.head import LatentInjectionHead
from probseg_bench.nn.levels import flatten_levels, flatten_normals, split_levels
from probseg_bench.nn.unet import ConvEncoder, UNet, parse_filters

__all__ = [
    "LOG_SIGMA_BOUND",
    "AxisAlignedConvGaussian",
    "ConvEncoder",
    "LatentInjectionHead",
    "UNet",
    "flatten_levels",
    "flatten_normals",
    "parse_filters",
    "split_levels",
]
