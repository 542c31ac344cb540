"""The finite-sample bias of the Sinkhorn divergence on EQUAL distributions (issue 14, the collapse mechanism).

    python -m benchmarks.sinkhorn_bias [--dim 6] [--trials 1000] [--output benchmarks/results/sinkhorn_bias.json]

SPU-Net's objective (seed paper Eq. 16) adds beta * S_eps between the A posterior samples and A prior samples of
one image (A = 4 annotators on LIDC). S_eps(mu, nu) = 0 only when the two *point sets* coincide: for two
independent n-point samples of the same distribution it is positive, and for a Gaussian N(0, s^2 I_d) it grows
like s^2 (the cost |x - y|^2 / 2 is quadratic in the scale). So at the optimum q = p the term still pays
beta * E[S_eps] ~ beta * c(n, eps, d) * s^2, which every sigma can lower by shrinking: the cheapest way to lower
the term is a prior and a posterior of tiny variance, i.e. samples that do not vary.

For each scale s, number of points n (each side; or n posterior vs m prior points) and epsilon, this prints the
mean over ``--trials`` draws of S_eps between independent samples of N(0, s^2 I_d), divided by s^2, and the same
for the finite-sample correction offered by the ``sinkhorn`` regularizer (``sinkhorn_correction = "split"``:
(S(q1, p1) + S(q2, p2) - S(q1, q2) - S(p1, p2)) / 2 over halves of the point sets, whose expectation is 0 when
q = p whatever the scale; only where n = m is even).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from probseg_regularizers.sinkhorn import SinkhornDivergence


def mean_divergence(scale: float, n: int, m: int, epsilon: float, dim: int, trials: int, correction: str,
                    generator: torch.Generator) -> tuple[float, float]:
    """(mean, standard error) of the ``sinkhorn`` regularizer over ``trials`` independent images whose posterior
    and prior are both N(0, scale^2 I_dim): n posterior samples vs m prior samples per image."""
    from torch.distributions import Normal

    from probseg_bench.api import TrainOutput

    reg = SinkhornDivergence(epsilon=epsilon, sinkhorn_correction=correction)
    q = scale * torch.randn(trials, n, dim, generator=generator, dtype=torch.float64)
    p = scale * torch.randn(trials, m, dim, generator=generator, dtype=torch.float64)
    zero = torch.zeros(trials, dim, dtype=torch.float64)
    prior = Normal(zero, zero + scale)
    out = TrainOutput(logits=zero, target=zero, prior=prior, posterior=prior, posterior_samples=q, prior_samples=p,
                      annotation_index=torch.zeros(trials, dtype=torch.long), sample_blocks=2)
    values = reg(out)
    return float(values.mean()), float(values.std() / trials**0.5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=6)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/sinkhorn_bias.json"))
    args = parser.parse_args(argv)
    g = torch.Generator().manual_seed(0)
    rows = []
    grid = [(s, 4, 4, 0.0025) for s in (0.1, 0.3, 1.0, 3.0)]
    grid += [(1.0, n, n, 0.0025) for n in (2, 8, 16, 64)]
    grid += [(1.0, 4, m, 0.0025) for m in (16, 64)]
    grid += [(1.0, 4, 4, eps) for eps in (0.05, 0.5, 5.0)]
    print(f"S_eps between independent samples of the same N(0, s^2 I_{args.dim}), mean over {args.trials} draws")
    print(f"{'s':>5} {'n post':>6} {'m prior':>7} {'eps':>7} | {'E[S]':>8} {'E[S]/s^2':>9} | "
          "split-corrected E / s^2 ± 2 s.e. (only where n = m)")
    for s, n, m, eps in grid:
        plain, plain_se = mean_divergence(s, n, m, eps, args.dim, args.trials, "none", g)
        if n == m and n % 2 == 0:
            corr, corr_se = mean_divergence(s, n, m, eps, args.dim, args.trials, "split", g)
        else:
            corr, corr_se = None, None
        rows.append({"scale": s, "n_posterior": n, "n_prior": m, "epsilon": eps, "mean": plain, "se": plain_se,
                     "mean_over_s2": plain / s**2, "corrected_mean": corr, "corrected_se": corr_se,
                     "corrected_over_s2": None if corr is None else corr / s**2})
        corrected = "" if corr is None or corr_se is None else f"{corr / s**2:+.4f} ± {2 * corr_se / s**2:.4f}"
        print(f"{s:5.1f} {n:6d} {m:7d} {eps:7.4f} | {plain:8.4f} {plain / s**2:9.4f} | {corrected}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"dim": args.dim, "trials": args.trials, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
