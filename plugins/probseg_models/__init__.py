"""Built-in model plugins: ``punet`` (Kohl et al. 2018), ``punet-nf`` (Valiuddin et al. 2021), ``spunet``
(Valiuddin et al. 2024), and two baselines without latent prior (``latent_dim = 0``): ``ssn`` (Monteiro et al.
2020) and ``unet-ensemble``, and the hierarchical ``phiseg`` (Baumgartner et al. 2019)
and ``hpunet`` (Kohl et al. 2019, GECO objective), and the categorical diffusion model ``ccdm`` (Zbinden et al. 2023,
no latent prior).

Registered through the entry-point group ``probseg_bench`` like any third-party plugin. torch is imported by
the factories, not here, so ``probseg-bench list`` stays fast.
"""

from __future__ import annotations

from typing import Any

from probseg_bench import hookimpl
from probseg_bench.api import HyperParameter, ModelSpec, ObjectiveTerm, Registry

ARCHITECTURE = (
    HyperParameter("filters", "32,64,128,192", "U-Net / encoder filters per level", tunable=False),
    HyperParameter("convs_per_block", 3, "3x3 convolutions per level", tunable=False, minimum=1),
    HyperParameter("head_convs", 4, "1x1 convolutions of the latent-injection head", tunable=False),
)


def build_punet(**kwargs: Any) -> Any:
    """Factory of ``punet``: see :class:`probseg_models.punet.ProbabilisticUNet`."""
    from probseg_models.punet import ProbabilisticUNet

    return ProbabilisticUNet(**kwargs)


def build_punet_nf(**kwargs: Any) -> Any:
    """Factory of ``punet-nf``: see :class:`probseg_models.punet_nf.FlowProbabilisticUNet`."""
    from probseg_models.punet_nf import FlowProbabilisticUNet

    return FlowProbabilisticUNet(**kwargs)


def build_spunet(**kwargs: Any) -> Any:
    """Factory of ``spunet``: see :class:`probseg_models.spunet.SinkhornProbabilisticUNet`."""
    from probseg_models.spunet import SinkhornProbabilisticUNet

    return SinkhornProbabilisticUNet(**kwargs)


def build_phiseg(**kwargs: Any) -> Any:
    """Factory of ``phiseg``: see :class:`probseg_models.phiseg.PHiSeg`."""
    from probseg_models.phiseg import PHiSeg

    return PHiSeg(**kwargs)


def build_hpunet(**kwargs: Any) -> Any:
    """Factory of ``hpunet``: see :class:`probseg_models.hpunet.HierarchicalProbabilisticUNet`."""
    from probseg_models.hpunet import HierarchicalProbabilisticUNet

    return HierarchicalProbabilisticUNet(**kwargs)


def build_ssn(**kwargs: Any) -> Any:
    """Factory of ``ssn``: see :class:`probseg_models.ssn.StochasticSegmentationNetwork`."""
    from probseg_models.ssn import StochasticSegmentationNetwork

    return StochasticSegmentationNetwork(**kwargs)


def build_ccdm(**kwargs: Any) -> Any:
    """Factory of ``ccdm``: see :class:`probseg_models.ccdm.CategoricalDiffusion`."""
    from probseg_models.ccdm import CategoricalDiffusion

    return CategoricalDiffusion(**kwargs)


def build_unet_ensemble(**kwargs: Any) -> Any:
    """Factory of ``unet-ensemble``: see :class:`probseg_models.ensemble.UNetEnsemble`."""
    from probseg_models.ensemble import UNetEnsemble

    return UNetEnsemble(**kwargs)


UNET = (
    HyperParameter("filters", "32,64,128,192", "U-Net filters per level", tunable=False),
    HyperParameter("convs_per_block", 3, "3x3 convolutions per level", tunable=False, minimum=1),
)

PUNET = ModelSpec(
    name="punet",
    description="Probabilistic U-Net (Kohl et al. 2018): ELBO = BCE + beta * KL(q(z|x,y_k) || p(z|x))",
    factory=build_punet,
    hyperparameters=(
        HyperParameter("beta", 1.0, "weight of the KL term", low=0.01, high=100.0, log=True, minimum=0),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none)", tunable=False, minimum=0),
        *ARCHITECTURE,
    ),
    objective=(ObjectiveTerm("kl", "beta"),),
    grad_clip="grad_clip",
    citation="Kohl et al., A Probabilistic U-Net for Segmentation of Ambiguous Images, NeurIPS 2018",
)

PUNET_NF = ModelSpec(
    name="punet-nf",
    description="PU-Net+NF (Valiuddin et al. 2021): PU-Net with an amortised flow posterior, Monte-Carlo KL",
    factory=build_punet_nf,
    hyperparameters=(
        HyperParameter("beta", 1.0, "weight of the KL term", low=0.01, high=100.0, log=True, minimum=0),
        HyperParameter("num_flows", 2, "flow steps (paper: 2)", low=1, high=8, minimum=1),
        HyperParameter("flow", "planar", "posterior flow", choices=("planar", "radial", "maf"), tunable=False),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none)", tunable=False, minimum=0),
        *ARCHITECTURE,
    ),
    objective=(ObjectiveTerm("kl", "beta"),),
    grad_clip="grad_clip",
    citation=(
        "Valiuddin et al., Improving Aleatoric Uncertainty Quantification in Multi-annotated Medical Image "
        "Segmentation with Normalizing Flows, UNSURE (MICCAI workshop) 2021"
    ),
)

SPUNET = ModelSpec(
    name="spunet",
    description="Sinkhorn PU-Net (Valiuddin et al. 2024, Eq. 16): BCE + alpha * KL + beta * Sinkhorn(q, p)",
    factory=build_spunet,
    hyperparameters=(
        HyperParameter("alpha", 10.0, "weight of KL(q(z|x,y_k) || p(z|x))", low=0.1, high=100.0, log=True, minimum=0),
        HyperParameter("beta", 100.0, "weight of the Sinkhorn divergence", low=1.0, high=1000.0, log=True, minimum=0),
        HyperParameter("grad_clip", 1.0, "gradient-norm clip (paper: 1)", tunable=False, minimum=0),
        HyperParameter("samples_per_annotation", 1,
                       "posterior samples per annotation in the Sinkhorn term, with as many prior samples per point "
                       "(paper: 1)", tunable=False, minimum=1),
        *ARCHITECTURE,
    ),
    objective=(ObjectiveTerm("kl", "alpha"), ObjectiveTerm("sinkhorn", "beta", swappable=True)),
    grad_clip="grad_clip",
    citation=(
        "Valiuddin et al., Investigating and Improving Latent Density Segmentation Models for Aleatoric "
        "Uncertainty Quantification in Medical Imaging, IEEE TMI 2024 (arXiv 2307.16694)"
    ),
)


SSN = ModelSpec(
    name="ssn",
    description="Stochastic Segmentation Network (Monteiro et al. 2020): logits ~ N(mu, P P^T + D) of rank R, "
                "loss -log mean_s p(y|logits_s) over S samples; no latent prior",
    factory=build_ssn,
    hyperparameters=(
        HyperParameter("rank", 10, "rank R of the logits' covariance factor (paper: 10)", low=1, high=20, minimum=1),
        HyperParameter("mc_samples", 20, "Monte-Carlo samples S of the loss (paper: 20)", low=2, high=40, minimum=1),
        HyperParameter("antithetic", False, "antithetic pairs mu +- (eta - mu) (PyTorch SSN; LIDC SSN-TF: off)",
                       tunable=False),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none)", tunable=False, minimum=0),
        *UNET,
    ),
    grad_clip="grad_clip",
    citation="Monteiro et al., Stochastic Segmentation Networks: Modelling Spatially Correlated Aleatoric "
             "Uncertainty, NeurIPS 2020",
)

PHISEG = ModelSpec(
    name="phiseg",
    description="PHiSeg (Baumgartner et al. 2019): L latent levels, residual CE sum_l CE(y, sum_{k>=l} s_k) + "
                "beta * sum_l 4^l KL(q_l || p_l); ancestral prior samples",
    factory=build_phiseg,
    hyperparameters=(
        HyperParameter("beta", 1.0, "weight of the level-weighted KL term (reference: 1)", low=0.01, high=100.0,
                       log=True, minimum=0),
        HyperParameter("latent_levels", 5, "latent levels L (reference LIDC: 5); min(L, R - 2) are used", low=1,
                       high=7, minimum=1),
        HyperParameter("exponential_weighting", True, "KL weights 4^l per level (reference: on), else 1",
                       choices=(True, False), tunable=False),
        HyperParameter("filters", "32,64,128,192,192,192,192",
                       "channels per resolution level, R = their number (reference: 7 levels)", tunable=False),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none)", tunable=False, minimum=0),
    ),
    objective=(ObjectiveTerm("kl", "beta"),),
    grad_clip="grad_clip",
    citation="Baumgartner et al., PHiSeg: Capturing Uncertainty in Medical Image Segmentation, MICCAI 2019",
    latent_dim=2,  # reference zdim0: 2 channels per pixel per level
)

HPUNET = ModelSpec(
    name="hpunet",
    description="Hierarchical PU-Net (Kohl et al. 2019): K latent scales in a residual U-Net decoder; GECO: "
                "lambda * (MA(top-k CE) - kappa * N) + sum_l KL(q_l || p_l), lambda ascended; ancestral prior samples",
    factory=build_hpunet,
    hyperparameters=(
        HyperParameter("kappa", 0.05, "GECO reconstruction constraint per kept pixel (reference: 0.05)",
                       low=0.005, high=0.5, log=True),
        HyperParameter("geco_rate", 0.01, "GECO: the multiplier's gradient scale -rate (reference: 0.01)",
                       low=0.001, high=1.0, log=True),
        HyperParameter("geco_decay", 0.99, "GECO: decay of the reconstruction's moving average (reference: 0.99)",
                       tunable=False, minimum=0, maximum=1),
        HyperParameter("top_k_percentage", 0.02, "fraction of the batch's pixels in the top-k CE (reference: 0.02)",
                       tunable=False, minimum=0, maximum=1),
        HyperParameter("deterministic_top_k", False, "plain top-k instead of Gumbel top-k (reference: off)",
                       choices=(True, False), tunable=False),
        HyperParameter("loss_type", "geco", "geco (reference) or elbo (R + beta * KL)", choices=("geco", "elbo"),
                       tunable=False),
        HyperParameter("beta", 1.0, "weight of the KL term (GECO: 1; the ELBO variant's beta)", tunable=False,
                       minimum=0),
        HyperParameter("latent_levels", 4, "latent scales K (reference: 4); min(K, levels - 1) are used",
                       tunable=False, minimum=1),
        HyperParameter("filters", "24,48,96,192,192,192,192,192", "channels per level (reference: 8 levels)",
                       tunable=False),
        HyperParameter("blocks_per_level", 3, "residual blocks per level (reference: 3)", tunable=False, minimum=1),
        HyperParameter("convs_per_block", 3, "convolutions per residual block (reference: 3)", tunable=False,
                       minimum=1),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none)", tunable=False, minimum=0),
    ),
    objective=(ObjectiveTerm("kl", "beta"),),
    grad_clip="grad_clip",
    citation="Kohl et al., A Hierarchical Probabilistic U-Net for Modeling Multi-Scale Ambiguities, arXiv "
             "1905.13077, 2019",
    latent_dim=1,  # reference latent_dims (1, 1, 1, 1): 1 channel per pixel per scale
    revision=1,  # 1: the validation loss (checkpoint selection) is the negative ELBO, free of GECO's lambda
)

UNET_ENSEMBLE = ModelSpec(
    name="unet-ensemble",
    description="Ensemble of M deterministic U-Nets, each on its own random annotations and seed; sample i = "
                "member i mod M; loss the members' summed BCE; no latent prior",
    factory=build_unet_ensemble,
    hyperparameters=(
        HyperParameter("members", 4, "ensemble size M (default 4)", low=2, high=8, minimum=1),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none)", tunable=False, minimum=0),
        *UNET,
    ),
    grad_clip="grad_clip",
    citation="Lakshminarayanan et al., Simple and Scalable Predictive Uncertainty Estimation using Deep "
             "Ensembles, NeurIPS 2017",
)


CCDM = ModelSpec(
    name="ccdm",
    description="Categorical conditional diffusion (Zbinden et al. 2023): T-step diffusion of the one-hot mask to "
                "uniform, a time-conditioned U-Net predicts p(x_0 | x_t, image), loss KL(q(x_{t-1}|x_t,x_0) || "
                "p(x_{t-1}|x_t)); ancestral sampling; no latent prior",
    factory=build_ccdm,
    hyperparameters=(
        HyperParameter("timesteps", 250, "diffusion steps T (reference: 250)", low=10, high=1000, log=True, minimum=1),
        HyperParameter("sampling_steps", 250, "reverse steps per sample; fewer than T: a strided schedule",
                       tunable=False, minimum=1),
        HyperParameter("ema_decay", 0.9999, "decay of the weight average used to evaluate (reference: 0.9999; "
                       "0 = none)", tunable=False, minimum=0, maximum=1),
        HyperParameter("filters", "32,64,64,128,160",
                       "denoiser channels per level (reference LIDC: 32 x (1, 2, 2, 4, 5), 9.1M parameters)",
                       tunable=False),
        HyperParameter("res_blocks", 2, "residual blocks per level (reference: 2)", tunable=False, minimum=1),
        HyperParameter("attention_ds", "8,16,32", "downsampling factors of the levels with self-attention "
                       "(reference: 8,16,32; the middle block always attends)", tunable=False),
        HyperParameter("head_channels", 32, "channels per attention head (reference: 32)", tunable=False, minimum=1),
        HyperParameter("validation_timesteps", 10, "stratified steps per image of the validation loss",
                       tunable=False, minimum=1),
        HyperParameter("sample_batch", 256, "images x samples per denoiser pass while sampling (memory)",
                       tunable=False, minimum=1),
        HyperParameter("grad_clip", 0.0, "gradient-norm clip (0 = none; reference: none)", tunable=False, minimum=0),
    ),
    grad_clip="grad_clip",
    citation="Zbinden, Doorenbos et al., Stochastic Segmentation with Conditional Categorical Diffusion Models, "
             "ICCV 2023",
)


@hookimpl
def probseg_bench_register_models(registry: Registry[ModelSpec]) -> None:
    registry.add(PUNET)
    registry.add(PUNET_NF)
    registry.add(SPUNET)
    registry.add(SSN)
    registry.add(PHISEG)
    registry.add(HPUNET)
    registry.add(UNET_ENSEMBLE)
    registry.add(CCDM)
