"""The pre-training check of a model plugin: one tiny batch through every method of the latent-model protocol
(:class:`probseg_bench.api.LatentSegmentationModel`) before a fold trains, so that a model that returns a wrong
type, shape or dtype fails at once, with a message naming the plugin, the method, and what was expected, e.g.
``model plugin 'my-model': sample(x, n=2) returned shape [2, 1, 32, 32], expected [B=2, n=2, K=1, H=32, W=32]``.

Checked (B images of the training split, A annotators, d = the latent dimension the factory was given):

* the factory built a ``torch.nn.Module`` with ``forward``, ``sample``, ``prior`` and ``decode`` and an integer
  attribute ``latent_dim`` equal to d;
* ``forward(x, masks)`` (masks uint8, as in training) returns a :class:`~probseg_bench.api.TrainOutput`: ``logits``
  float [B, K, H, W]; ``target`` float, the shape of ``logits``, values in {0, 1}; ``prior`` and ``posterior``
  ``torch.distributions.Normal`` with loc/scale [B, d], scale > 0; ``posterior_samples`` float [B, S, d] and
  ``prior_samples`` of the same shape; ``annotation_index`` an integer tensor [B] with values in 0..A-1;
  ``base_samples`` None or [B, d] and ``log_det`` None or [B] (``log_det`` only with ``base_samples``);
  ``sample_blocks`` an integer >= 1 that divides S;
* ``prior(x)``: ``Normal`` with loc/scale [B, d], scale > 0;
* ``sample(x, n=2)``: float [B, 2, K, H, W] (K of ``forward``'s logits);
* ``decode(x, z)`` with z [B, 2, d]: float [B, 2, K, H, W];
* every floating-point output is finite.

A hierarchical model returns ``level_sizes`` (positive integers; ``level_weights`` empty or one per level): D =
sum(level_sizes) then replaces d in every latent shape above (the flattened levels, ``decode`` gets z [B, 2, D]).

A model without latent prior declares ``latent_dim = 0`` (whatever d it was given): then ``forward``'s ``prior``,
``posterior``, ``posterior_samples`` and ``prior_samples`` must be None (``base_samples``/``log_det`` too),
``prior(x)`` must return None, ``decode`` is not called, and a ``reconstruction`` (always checked when given) must
be float [B].

The check runs without gradients, in eval mode (every module's train/eval flag is restored afterwards), and
inside ``torch.random.fork_rng``: the model's weights and the random draws of the training that follows are
exactly those of a run without the check.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch.distributions import Normal

from probseg_bench.api import TrainOutput
from probseg_bench.errors import ProbsegError

N_SAMPLES = 2
"""The ``n`` of the ``sample(x, n)`` call and of the latents given to ``decode``."""

_TORCH_DIR = str(Path(torch.__file__).resolve().parent)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def _expected(dims: Mapping[str, int | None]) -> str:
    """``{"B": 2, "K": None}`` -> ``[B=2, K]`` (None: any size)."""
    return "[" + ", ".join(k if v is None else f"{k}={v}" for k, v in dims.items()) + "]"


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame outside torch, to find the plugin's line."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not str(Path(f.filename).resolve()).startswith(
        _TORCH_DIR)]
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


class _Check:
    """The checks of one model, raising :class:`ProbsegError` with the plugin's name and the inputs."""

    def __init__(self, plugin: str, inputs: str) -> None:
        self.plugin = plugin
        self.inputs = inputs

    def fail(self, message: str) -> NoReturn:
        raise ProbsegError(f"model plugin '{self.plugin}': {message} ({self.inputs})")

    def call(self, label: str, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except ProbsegError:
            raise
        except Exception as exc:
            raise ProbsegError(
                f"model plugin '{self.plugin}': {label} raised {type(exc).__name__}: {exc}{_where(exc)} "
                f"({self.inputs})"
            ) from exc

    def tensor(self, call: str, field: str, value: Any, dims: Mapping[str, int | None],
               kind: str = "float") -> torch.Tensor:
        """``value`` (``field`` of what ``call`` returned, "" = the return value itself) must be a tensor of shape
        ``dims`` (None: any size >= 1); ``kind`` float (and finite) or int."""
        of = f"{field} of " if field else ""
        if not isinstance(value, torch.Tensor):
            self.fail(f"{call} returned {field + ' as ' if field else ''}{_a(type(value).__name__)}, expected a "
                      f"tensor {_expected(dims)}")
        sizes = list(dims.values())
        if value.ndim != len(sizes) or any(
            (s is not None and actual != s) or actual < 1 for actual, s in zip(value.shape, sizes, strict=False)
        ):
            self.fail(f"{call} returned {of}shape {_shape(value)}, expected {_expected(dims)}")
        if kind == "float":
            if not value.is_floating_point():
                self.fail(f"{call} returned {of}dtype {value.dtype}, expected a floating-point tensor "
                          f"{_expected(dims)}")
            if not bool(torch.isfinite(value).all()):
                self.fail(f"{call} returned {field + ' with ' if field else ''}NaN or infinite values")
        elif value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            self.fail(f"{call} returned {of}dtype {value.dtype}, expected an integer tensor {_expected(dims)}")
        return value

    def normal(self, call: str, field: str, value: Any, batch: int, latent_dim: int) -> Normal:
        """``value`` must be a ``Normal`` with loc and scale [B, d], scale > 0."""
        dims = {"B": batch, "d": latent_dim}
        if not isinstance(value, Normal):
            self.fail(f"{call} returned {field + ' as ' if field else ''}{_a(type(value).__name__)}, expected a "
                      f"torch.distributions.Normal with loc/scale {_expected(dims)}")
        dot = f"{field}." if field else ""
        self.tensor(call, f"{dot}loc", value.loc, dims)
        scale = self.tensor(call, f"{dot}scale", value.scale, dims)
        if not bool((scale > 0).all()):
            self.fail(f"{call} returned {dot}scale <= 0 (min {float(scale.min()):.3g}), expected positive standard "
                      "deviations")
        return value


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def check_model(plugin: str, model: Any, latent_dim: int, images: torch.Tensor, masks: torch.Tensor) -> None:
    """Check ``model`` (built by model plugin ``plugin`` with ``latent_dim``) on one batch: ``images`` float
    [B, C, H, W] and ``masks`` [B, A, H, W] (as training passes them); the model is moved to their device first.
    See the module docstring for what is checked.

    Raises:
        ProbsegError: the first violation, naming the plugin, the method and the expected vs. actual shape or type.
    """
    if not isinstance(model, torch.nn.Module):
        raise ProbsegError(
            f"model plugin '{plugin}': factory returned {type(model).__name__}, expected a torch.nn.Module with "
            "forward/sample/prior/decode and latent_dim (probseg_bench.api.LatentSegmentationModel)"
        )
    missing = [m for m in ("forward", "sample", "prior", "decode") if not callable(getattr(model, m, None))]
    if missing:
        raise ProbsegError(
            f"model plugin '{plugin}': the model ({type(model).__name__}) has no method {', '.join(missing)}; "
            "expected forward/sample/prior/decode (probseg_bench.api.LatentSegmentationModel)"
        )
    declared = getattr(model, "latent_dim", None)
    if not isinstance(declared, int) or isinstance(declared, bool) or declared not in (latent_dim, 0):
        got = "no attribute latent_dim" if declared is None else f"latent_dim = {declared!r}"
        raise ProbsegError(
            f"model plugin '{plugin}': the model ({type(model).__name__}) has {got}, expected the integer "
            f"latent_dim = {latent_dim} it was built with (or 0 for a model without latent prior)"
        )
    latent_dim = declared
    model.to(images.device)
    b, a, h, w = masks.shape
    dtype = {t: str(t.dtype).removeprefix("torch.") for t in (images, masks)}
    check = _Check(plugin, f"pre-training check, x: {dtype[images]} {_shape(images)}, masks: {dtype[masks]} "
                           f"{_shape(masks)}")
    modes = [(m, m.training) for m in model.modules()]
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            _check_outputs(check, model, latent_dim, images, masks, b, a, h, w)
    finally:
        for module, training in modes:
            module.training = training


def _check_outputs(check: _Check, model: Any, d: int, x: torch.Tensor, masks: torch.Tensor,
                   b: int, a: int, h: int, w: int) -> None:
    out = check.call("forward(x, masks)", model, x, masks)
    if not isinstance(out, TrainOutput):
        check.fail(f"forward(x, masks) returned a {type(out).__name__}, expected a probseg_bench.api.TrainOutput")
    f = "forward(x, masks)"
    logits = check.tensor(f, "logits", out.logits, {"B": b, "K": None, "H": h, "W": w})
    k = int(logits.shape[1])
    target = check.tensor(f, "target", out.target, {"B": b, "K": k, "H": h, "W": w})
    if not bool(((target == 0) | (target == 1)).all()):
        check.fail(f"{f} returned a target with values other than 0 and 1, expected the reconstructed annotation")
    if out.reconstruction is not None:
        check.tensor(f, "reconstruction", out.reconstruction, {"B": b})
    index = check.tensor(f, "annotation_index", out.annotation_index, {"B": b}, kind="int")
    if bool(((index < 0) | (index >= a)).any()):
        check.fail(f"{f} returned annotation_index {index.tolist()}, expected values in 0..{a - 1} (A={a} "
                   "annotators)")
    n = N_SAMPLES
    call = f"sample(x, n={n})"
    if d == 0:
        _check_no_latent(check, model, x, out)
        check.tensor(call, "", check.call(call, model.sample, x, n), {"B": b, "n": n, "K": k, "H": h, "W": w})
        return
    d = _latent_size(check, f, out, d)
    check.normal(f, "prior", out.prior, b, d)
    check.normal(f, "posterior", out.posterior, b, d)
    post = check.tensor(f, "posterior_samples", out.posterior_samples, {"B": b, "S": None, "d": d})
    s = int(post.shape[1])
    check.tensor(f, "prior_samples", out.prior_samples, {"B": b, "S": s, "d": d})
    if out.base_samples is not None:
        check.tensor(f, "base_samples", out.base_samples, {"B": b, "d": d})
    if out.log_det is not None:
        if out.base_samples is None:
            check.fail(f"{f} returned log_det without base_samples; a flow posterior returns both (z_0 [B, d], "
                       "log_det [B])")
        check.tensor(f, "log_det", out.log_det, {"B": b})
    blocks = out.sample_blocks
    if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1 or s % blocks:
        check.fail(f"{f} returned sample_blocks = {blocks!r}, expected an integer >= 1 dividing S = {s} "
                   f"(posterior_samples {_shape(post)})")
    prior = check.normal("prior(x)", "", check.call("prior(x)", model.prior, x), b, d)
    check.tensor(call, "", check.call(call, model.sample, x, n), {"B": b, "n": n, "K": k, "H": h, "W": w})
    call = f"decode(x, z [{b}, {n}, {d}])"
    z = prior.loc[:, None].expand(b, n, d).contiguous()
    check.tensor(call, "", check.call(call, model.decode, x, z), {"B": b, "n": n, "K": k, "H": h, "W": w})


def _latent_size(check: _Check, f: str, out: TrainOutput, d: int) -> int:
    """The flattened latent size: d, or D = sum(level_sizes) for a hierarchical model (sizes checked)."""
    sizes, weights = out.level_sizes, out.level_weights
    if not sizes:
        if weights:
            check.fail(f"{f} returned level_weights without level_sizes")
        return d
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in sizes):
        check.fail(f"{f} returned level_sizes = {sizes!r}, expected positive integers (one per latent level)")
    if weights and len(weights) != len(sizes):
        check.fail(f"{f} returned {len(weights)} level_weights for {len(sizes)} level_sizes, expected one per level")
    return int(sum(sizes))


def _check_no_latent(check: _Check, model: Any, x: torch.Tensor, out: TrainOutput) -> None:
    """A model with ``latent_dim = 0``: no latent fields in ``forward``'s output, ``prior(x)`` None."""
    f = "forward(x, masks)"
    for name in ("prior", "posterior", "posterior_samples", "prior_samples", "base_samples", "log_det"):
        if getattr(out, name) is not None:
            check.fail(f"{f} returned {name}, expected None from a model with latent_dim = 0 (no latent prior)")
    prior = check.call("prior(x)", model.prior, x)
    if prior is not None:
        check.fail(f"prior(x) returned {_a(type(prior).__name__)}, expected None from a model with latent_dim = 0 "
                   "(no latent prior)")
