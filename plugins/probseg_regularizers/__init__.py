"""Built-in latent-regularizer plugins: ``kl``, ``sinkhorn`` and ``mmd``. Each returns a per-image penalty [B]."""

from __future__ import annotations

from typing import Any

from probseg_bench import hookimpl
from probseg_bench.api import HyperParameter, Registry, RegularizerSpec


def build_kl(**kwargs: Any) -> Any:
    from probseg_regularizers.kl import KLDivergence

    return KLDivergence(**kwargs)


def build_sinkhorn(**kwargs: Any) -> Any:
    from probseg_regularizers.sinkhorn import SinkhornDivergence

    return SinkhornDivergence(**kwargs)


def build_mmd(**kwargs: Any) -> Any:
    from probseg_regularizers.mmd import MaximumMeanDiscrepancy

    return MaximumMeanDiscrepancy(**kwargs)


KL = RegularizerSpec(
    name="kl",
    description="KL(q(z|x,y_k) || p(z|x)), analytic for Gaussians, Monte-Carlo for a flow posterior",
    factory=build_kl,
)

SINKHORN = RegularizerSpec(
    name="sinkhorn",
    description="debiased Sinkhorn divergence S_eps (geomloss) per image, posterior vs prior samples",
    factory=build_sinkhorn,
    hyperparameters=(
        HyperParameter(
            "epsilon", 0.0025,
            "entropic regularisation eps of S_eps, in units of the cost |x-y|^p / p (geomloss blur = eps^(1/p))",
            low=1e-4, high=1.0, log=True,
        ),
        HyperParameter("sinkhorn_p", 2, "exponent p of the ground cost |x-y|^p / p", choices=(1, 2), tunable=False),
        HyperParameter("sinkhorn_scaling", 0.5, "geomloss eps-scaling ratio (annealing speed)", tunable=False),
        HyperParameter(
            "sinkhorn_prior_samples", 0,
            "prior samples per image in the term: 0 = the model's (as many as posterior samples, the paper); "
            "M > 0 = M fresh reparameterised draws of p(z|x)",
            tunable=False,
        ),
        HyperParameter("sinkhorn_prior_gradient", True,
                       "whether the term's gradient reaches the prior through its samples (the paper: yes)",
                       choices=(True, False), tunable=False),
        HyperParameter(
            "sinkhorn_correction", "none",
            "finite-sample bias correction: none (the paper) or split = (S(q1,p1) + S(q2,p2) - S(q1,q2) - "
            "S(p1,p2)) / 2 over halves of the point sets, 0 in expectation when q = p (needs >= 2 posterior "
            "samples per annotation)",
            choices=("none", "split"), tunable=False,
        ),
    ),
    citation="Feydy et al., Interpolating between Optimal Transport and MMD using Sinkhorn Divergences, AISTATS 2019",
)


MMD = RegularizerSpec(
    name="mmd",
    description="squared MMD (geomloss kernel loss) per image, posterior vs prior samples",
    factory=build_mmd,
    hyperparameters=(
        HyperParameter("mmd_kernel", "gaussian", "kernel", choices=("gaussian", "laplacian", "energy")),
        HyperParameter("mmd_blur", 1.0, "kernel bandwidth sigma (latent units; unused by 'energy')",
                       low=0.05, high=10.0, log=True),
    ),
    citation="Gretton et al., A Kernel Two-Sample Test, JMLR 2012; Feydy et al., AISTATS 2019 (geomloss)",
)


@hookimpl
def probseg_bench_register_regularizers(registry: Registry[RegularizerSpec]) -> None:
    registry.add(KL)
    registry.add(SINKHORN)
    registry.add(MMD)
