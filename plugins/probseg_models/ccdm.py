"""Categorical Conditional Diffusion Model, CCDM (Zbinden et al., "Stochastic Segmentation with Conditional
Categorical Diffusion Models", ICCV 2023), after the authors' code (github.com/LarsDoorenbos/
ccdm-stochastic-segmentation, MIT: ``ddpm/models/diffusion_denoising.py``, ``ddpm/trainer.py``, ``ddpm/polyak.py``).

A mask is one-hot over L = 2 classes (background, foreground), x_0 [B, L, H, W]. The forward process is a
categorical diffusion towards the uniform distribution (Hoogeboom et al. 2021):

    q(x_t | x_{t-1}) = Cat(alpha_t x_{t-1} + (1 - alpha_t) / L),   q(x_t | x_0) = Cat(abar_t x_0 + (1 - abar_t) / L),

abar_t = prod_{s <= t} alpha_s, with the cosine schedule (Nichol & Dhariwal 2021): f(t) = cos(((t / T + s) / (1 + s))
pi / 2)^2, beta_t = min(1 - f(t) / f(t - 1), 0.999), s = 0.008, T = 250. The posterior of an earlier step s < t is,
by Bayes' rule, q(x_s | x_t, x_0) proportional to q(x_t | x_s) q(x_s | x_0) = (abar_t / abar_s x_t + (1 - abar_t /
abar_s) / L) * (abar_s x_0 + (1 - abar_s) / L) (elementwise over the classes of x_s); for s = 0 it is x_0 itself.
A denoiser (:class:`probseg_models.diffusion_unet.DiffusionUNet`) predicts p(x_0 | x_t, image); the model's
reverse step is p(x_s | x_t) = sum_{x_0'} q(x_s | x_t, x_0') p(x_0' | x_t, image).

Loss (the reference's ``train_step``): one step t uniform in 1..T and one annotation uniform among the image's per
image and step, x_t ~ q(x_t | x_0), and KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) summed over classes and
pixels (at t = 1 this is -log p(x_0 | x_1), the reconstruction term), per image (the reference divides the batch
sum by the batch size). Sampling is ancestral from the uniform categorical x_T, drawing x_{t-1} ~ p(x_{t-1} | x_t)
down to t = 1 and taking the most probable class of p(x_0 | x_1) (the reference's ``max_prob_sample``).

Where we deviate from the reference code, and why:

* abar_t: the reference's closed form uses f(t - 1) unnormalised (``cumalphas[t - 1] = f(t - 1)``), one step
  behind its own one-step transitions (``alphas[t - 1] = f(t) / f(t - 1)``), so composing its one-step
  transitions does not give its closed form; we use abar_t = prod alpha_s = f(t) / f(0) (with the 0.999 cap),
  which the paper's equations define. The two differ by one step: abar_1 is 0.999806 here (f(1) / f(0)),
  0.999845 in the reference (f(0)); abar_T is 3.9e-8 here (the capped last beta), 3.9e-5 in the reference.
* Fewer sampling steps (``sampling_steps`` < T): the steps round(linspace(T, 1, K)) as the reference's
  ``forward_denoising``, but each jump t -> s uses the exact posterior q(x_s | x_t, x_0) of that jump; the
  reference applies the one-step posterior q(x_{t-1} | x_t, x_0) at every strided t.
* The validation loss (which selects the checkpoint under this suite's protocol; the reference selects on
  validation GED from 100 validation images) averages the loss over ``validation_timesteps`` stratified steps per
  image (t_j = round((j + 1/2) T / k)), a lower-variance estimate of the same expected loss than one random t.
* Weight averaging (the reference's ``PolyakAverager``, decay ``ema_decay``): a copy of the denoiser updated after
  every optimiser step as avg = decay * avg + (1 - decay) * weights; in eval mode (validation loss, sampling) the
  average is used, as the reference evaluates its ``average_model``.

``sample`` returns, per sample, the foreground log-odds log p(x_0 = 1 | x_1) - log p(x_0 = 0 | x_1) of the last
step (probabilities clamped at 1e-12): positive exactly where the sample is foreground, and its sigmoid is the
model's last-step confidence, which the suite's pixel-wise metrics read. The model has no latent prior
(``latent_dim = 0``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from torch import nn

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError
from probseg_bench.nn import parse_filters
from probseg_models.diffusion_unet import DiffusionUNet

CLASSES = 2
PROB_FLOOR = 1e-12  # the reference's clamp of p(x_{t-1} | x_t) before the log and before sampling


def cosine_schedule(steps: int, s: float = 0.008, max_beta: float = 0.999) -> tuple[torch.Tensor, torch.Tensor]:
    """The cosine noise schedule (Nichol & Dhariwal 2021, Eq. 17) as the CCDM code computes its betas.

    Returns:
        (alphas, alpha_bars), float64 [T + 1], indexed by the step t = 0..T: alpha_t = 1 - beta_t with beta_t =
        min(1 - f(t) / f(t - 1), max_beta), f(t) = cos(((t / T + s) / (1 + s)) pi / 2)^2; alpha_0 = abar_0 = 1 and
        abar_t = prod_{u <= t} alpha_u.

    Raises:
        ProbsegError: steps < 1.
    """
    if steps < 1:
        raise ProbsegError(f"timesteps: expected an integer >= 1, got {steps}")

    def f(t: int) -> float:
        return math.cos((t / steps + s) / (1 + s) * math.pi / 2) ** 2

    betas = [0.0] + [min(1 - f(t) / f(t - 1), max_beta) for t in range(1, steps + 1)]
    alphas = 1 - torch.tensor(betas, dtype=torch.float64)
    return alphas, torch.cumprod(alphas, 0)


def _expand(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, 1, 1, ...] matching ``like``'s dimensions, in its dtype."""
    return a.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))


def q_xt_given_x0(x0: torch.Tensor, abar_t: torch.Tensor) -> torch.Tensor:
    """q(x_t | x_0): class probabilities [B, L, H, W] = abar_t x_0 + (1 - abar_t) / L for x_0 [B, L, H, W] (one-hot
    or probabilities) and abar_t [B]."""
    a = _expand(abar_t, x0)
    return a * x0 + (1 - a) / x0.shape[1]


def posterior(xt: torch.Tensor, x0: torch.Tensor, abar_t: torch.Tensor, abar_s: torch.Tensor) -> torch.Tensor:
    """q(x_s | x_t, x_0) for s < t: [B, L, H, W], normalised over the classes (dim 1).

    Args:
        xt: one-hot x_t [B, L, H, W].
        x0: one-hot x_0 [B, L, H, W].
        abar_t, abar_s: [B], abar of the steps t and s (abar_s = 1 for s = 0: the result is x_0).
    """
    classes = xt.shape[1]
    a = _expand(abar_t / abar_s, xt)
    theta = (a * xt + (1 - a) / classes) * q_xt_given_x0(x0, abar_s)
    return theta / theta.sum(1, keepdim=True)


def posterior_mixture(xt: torch.Tensor, p_x0: torch.Tensor, abar_t: torch.Tensor,
                      abar_s: torch.Tensor) -> torch.Tensor:
    """The model's reverse step p(x_s | x_t) = sum_{x_0'} q(x_s | x_t, x_0') p(x_0' | x_t): [B, L, H, W].

    Args:
        xt: one-hot x_t [B, L, H, W].
        p_x0: the denoiser's p(x_0 | x_t, image), probabilities [B, L, H, W].
        abar_t, abar_s: [B] (see :func:`posterior`).
    """
    classes = xt.shape[1]
    eye = torch.eye(classes, dtype=xt.dtype, device=xt.device)  # x_0' one-hot along dim 0, class along dim 1
    a = _expand(abar_t / abar_s, xt)
    first = a * xt + (1 - a) / classes  # [B, L_s, H, W]: q(x_t | x_s) as a function of x_s
    b = abar_s.to(xt.dtype)[:, None, None]
    second = b * eye + (1 - b) / classes  # [B, L_0', L_s]: q(x_s | x_0')
    joint = first[:, None] * second[:, :, :, None, None]  # [B, L_0', L_s, H, W]
    post = joint / joint.sum(2, keepdim=True)
    return torch.einsum("bosxy,boxy->bsxy", post, p_x0)


def diffusion_kl(target: torch.Tensor, model: torch.Tensor) -> torch.Tensor:
    """KL(target || model) over the classes, summed over classes and pixels: [B], for probabilities [B, L, H, W]
    (``model`` clamped at 1e-12 before the log, 0 log 0 = 0, as ``torch.nn.functional.kl_div``)."""
    kl = torch.special.xlogy(target, target) - target * torch.log(model.clamp_min(PROB_FLOOR))
    return kl.flatten(1).sum(1)


def sampling_schedule(timesteps: int, steps: int) -> list[int]:
    """The steps visited by ancestral sampling, from T down to 1 (then 0): all T when ``steps >= T``, else
    round(linspace(T, 1, steps)) without repeats (the reference's strided schedule)."""
    if steps >= timesteps:
        return list(range(timesteps, 0, -1))
    points = [round(v) for v in torch.linspace(timesteps, 1, steps, dtype=torch.float64).tolist()]
    return list(dict.fromkeys(points))


class CategoricalDiffusion(nn.Module):
    """CCDM: the categorical diffusion process and its denoiser; the latent-model protocol of the suite with
    ``latent_dim = 0`` (see the module docstring).

    Args:
        latent_dim: ignored (the CLI's --latent-dim; no latent space): ``self.latent_dim = 0``.
        in_channels: image channels C.
        timesteps: T (reference: 250).
        filters: the denoiser's channels per level (reference LIDC: "32,64,64,128,160", base 32 x (1, 2, 2, 4, 5),
            9.1M parameters).
        res_blocks: residual blocks per level (reference: 2).
        attention_ds: downsampling factors of the levels with attention, comma-separated (reference: "8,16,32").
        head_channels: channels per attention head (reference: 32).
        sampling_steps: reverse steps per sample (T: all; fewer: the strided schedule of
            :func:`sampling_schedule`).
        ema_decay: decay of the weight average used in eval mode (reference: 0.9999; 0 = no average).
        validation_timesteps: stratified steps per image of the eval-mode (validation) loss.
        sample_batch: at most this many images x samples per denoiser pass while sampling (memory).
    """

    alpha_bars: torch.Tensor  # [T + 1], a buffer: abar_t by step t

    def __init__(self, latent_dim: int = 0, in_channels: int = 1, timesteps: int = 250,
                 filters: str | Sequence[int] = "32,64,64,128,160", res_blocks: int = 2,
                 attention_ds: str = "8,16,32", head_channels: int = 32, sampling_steps: int = 250,
                 ema_decay: float = 0.9999, validation_timesteps: int = 10, sample_batch: int = 256,
                 **_: object) -> None:
        super().__init__()
        for name, value, low in (("timesteps", timesteps, 1), ("res_blocks", res_blocks, 1),
                                 ("sampling_steps", sampling_steps, 1),
                                 ("validation_timesteps", validation_timesteps, 1), ("sample_batch", sample_batch, 1)):
            if int(value) < low:
                raise ProbsegError(f"{name}: expected an integer >= {low}, got {value}")
        if not 0 <= float(ema_decay) < 1:
            raise ProbsegError(f"ema_decay: expected a value in [0, 1), got {ema_decay}")
        try:
            attention = tuple(int(v) for v in str(attention_ds).split(",") if v.strip())
        except ValueError:
            raise ProbsegError(f"attention_ds: expected comma-separated integers, got {attention_ds!r}") from None
        self.latent_dim = 0
        self.timesteps = int(timesteps)
        self.sampling_steps = int(sampling_steps)
        self.ema_decay = float(ema_decay)
        self.validation_timesteps = int(validation_timesteps)
        self.sample_batch = int(sample_batch)
        _alphas, alpha_bars = cosine_schedule(self.timesteps)
        self.register_buffer("alpha_bars", alpha_bars.float(), persistent=False)
        self.denoiser = DiffusionUNet(CLASSES + in_channels, CLASSES, parse_filters(filters), int(res_blocks),
                                      attention, int(head_channels))
        self.average: DiffusionUNet | None = None
        if self.ema_decay > 0:
            self.average = copy.deepcopy(self.denoiser).requires_grad_(False)

    # -------------------------------------------------------------------------------------- the denoiser
    def _network(self) -> nn.Module:
        """The weights in use: the trained denoiser in train mode, its average (when kept) in eval mode."""
        return self.denoiser if self.training or self.average is None else self.average

    def predict_x0(self, xt: torch.Tensor, image: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """p(x_0 | x_t, image) [B, L, H, W] (float32) for one-hot x_t [B, L, H, W], image [B, C, H, W], steps t [B]."""
        return self._network()(torch.cat([xt.to(image.dtype), image], 1), t).float()

    @torch.no_grad()
    def on_optimizer_step(self) -> None:
        """The training loop's hook after every optimiser step: avg = decay * avg + (1 - decay) * weights."""
        if self.average is None:
            return
        for avg, cur in zip(self.average.state_dict().values(), self.denoiser.state_dict().values(), strict=True):
            if avg.is_floating_point():
                avg.mul_(self.ema_decay).add_(cur.detach(), alpha=1 - self.ema_decay)
            else:
                avg.copy_(cur)

    # ------------------------------------------------------------------------------------------- training
    def loss(self, image: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) [B] at steps t [B] (1..T) for one-hot x_0
        [B, L, H, W], with x_t drawn from q(x_t | x_0); and p(x_0 | x_t) [B, L, H, W]. The diffusion arithmetic
        is float32 (also under a bfloat16 autocast)."""
        abar_t, abar_s = self.alpha_bars[t], self.alpha_bars[t - 1]
        with torch.autocast(image.device.type, enabled=False):
            xt = one_hot_sample(q_xt_given_x0(x0, abar_t))
        p_x0 = self.predict_x0(xt, image, t)
        with torch.autocast(image.device.type, enabled=False):
            target = posterior(xt, x0, abar_t, abar_s)
            model = posterior_mixture(xt, p_x0, abar_t, abar_s)
            return diffusion_kl(target, model), p_x0

    def forward(self, image: torch.Tensor, masks: torch.Tensor) -> TrainOutput:
        """One annotation k and one step t per image (train mode), or k and ``validation_timesteps`` stratified
        steps per image with their mean loss (eval mode); ``reconstruction`` = the per-image loss [B],
        ``logits`` = the foreground log-odds of p(x_0 | x_t) (for monitoring)."""
        b, a = masks.shape[:2]
        k = torch.randint(a, (b,), device=masks.device)
        y = masks[torch.arange(b, device=masks.device), k].to(torch.float32)
        x0 = torch.stack([1 - y, y], 1)
        if self.training:
            t = torch.randint(1, self.timesteps + 1, (b,), device=image.device)
            loss, p_x0 = self.loss(image, x0, t)
        else:
            j = self.validation_timesteps
            steps = [min(self.timesteps, max(1, round((i + 0.5) * self.timesteps / j))) for i in range(j)]
            t = torch.tensor(steps, device=image.device).repeat_interleave(b)  # [j * B]: step-major
            loss_all, p_all = self.loss(image.repeat(j, 1, 1, 1), x0.repeat(j, 1, 1, 1), t)
            loss, p_x0 = loss_all.reshape(j, b).mean(0), p_all[:b]
        return TrainOutput(
            logits=log_odds(p_x0)[:, None], target=y[:, None], prior=None, posterior=None, posterior_samples=None,
            prior_samples=None, annotation_index=k, reconstruction=loss,
        )

    # ------------------------------------------------------------------------------------------- sampling
    def sample(self, image: torch.Tensor, n: int) -> torch.Tensor:
        """n masks per image by ancestral sampling (``sampling_steps`` steps) -> the last step's foreground
        log-odds [B, n, 1, H, W] (> 0 exactly on the sampled foreground). Images x samples go through the denoiser
        ``sample_batch`` at a time, each chunk through every step."""
        b, _, h, w = image.shape
        tiled = image.repeat_interleave(n, 0)  # [B * n, C, H, W]: image-major
        out = [self._sample_chunk(tiled[i : i + self.sample_batch])
               for i in range(0, tiled.shape[0], self.sample_batch)]
        return torch.cat(out, 0).reshape(b, n, 1, h, w)

    def _sample_chunk(self, image: torch.Tensor) -> torch.Tensor:
        m, _, h, w = image.shape
        uniform = torch.full((m, CLASSES, h, w), 1.0 / CLASSES, device=image.device)
        xt = one_hot_sample(uniform)
        steps = sampling_schedule(self.timesteps, self.sampling_steps)
        for i, t in enumerate(steps):
            s = steps[i + 1] if i + 1 < len(steps) else 0
            t_ = torch.full((m,), t, device=image.device, dtype=torch.long)
            p_x0 = self.predict_x0(xt, image, t_)
            if s == 0:  # p(x_0 | x_t): its most probable class
                return log_odds(p_x0)
            probs = posterior_mixture(xt, p_x0, self.alpha_bars[t_], self.alpha_bars[torch.full_like(t_, s)])
            xt = one_hot_sample(probs.clamp_min(PROB_FLOOR))
        raise AssertionError("the sampling schedule ends at a step >= 1")  # pragma: no cover

    def prior(self, image: torch.Tensor) -> None:
        """No latent prior (``latent_dim = 0``)."""
        return None

    def decode(self, image: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("CCDM has no latent space to decode")


def one_hot_sample(probs: torch.Tensor) -> torch.Tensor:
    """One draw per pixel of Cat(probs) (class probabilities along dim 1, [B, L, H, W]; need not be normalised)
    -> one-hot float [B, L, H, W]: the first class whose cumulative probability exceeds a uniform draw."""
    cdf = probs.cumsum(1)
    u = torch.rand_like(cdf[:, :1]) * cdf[:, -1:]
    index = (u >= cdf).sum(1).clamp_max(probs.shape[1] - 1)
    return torch.nn.functional.one_hot(index, probs.shape[1]).movedim(-1, 1).to(probs.dtype)


def log_odds(p_x0: torch.Tensor) -> torch.Tensor:
    """Foreground log-odds log p_1 - log p_0 [B, H, W] of class probabilities [B, 2, H, W] (clamped at 1e-12)."""
    logp = torch.log(p_x0.clamp_min(PROB_FLOOR))
    return logp[:, 1] - logp[:, 0]
