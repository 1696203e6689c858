r"""PED (potential energy descent) batched over models (maths: te_gpu.reference.ped,
SPEC 10.9): the features of B models moved, class by class, until the motion slows.

Each step reads only class statistics of the rescaled features
:math:`z = (x - m) / s'`: the C means, the C radii and the C x C distances between
means. With :math:`W_{ab} = s_{ab} / d_{ab}` (0 where the classes do not overlap or
their means coincide), the reference's pairwise sum of pushes is one product,

.. math::
    \delta_a = -\sum_{b \ne a} W_{ab} (\mu_b - \mu_a)
             = \Big(\sum_b W_{ab}\Big) \mu_a - (W \mu)_a,

so no C x C x D tensor is formed. Models stop independently: a model whose step
falls to ``exit_ratio`` of its first step keeps its features from then on, while
the others go on (up to ``max_steps``).

Rescaling: by a reference distribution's per-dimension mean and std (the released
scripts: the same model's ImageNet features), given as ``centre`` and ``spread``
(B, D); without them, the target features' own (SPEC 10.9: te_gpu's default, a
departure where no reference set is at hand).
"""
from __future__ import annotations

import torch

from .._checks import check_ped_options
from .stats import Labels


def class_moves(z: torch.Tensor, labels: Labels, time_step: float, nsigma: float,
                constant: float) -> torch.Tensor:
    """(B, N, D) rescaled features -> (B, C, D): one step's displacement of each class."""
    onehot = labels.onehot.to(z.dtype)
    counts = onehot.sum(0)
    means = torch.einsum("nc,bnd->bcd", onehot, z) / counts[:, None]
    centred = z - means[:, labels.codes]
    radius = (torch.einsum("nc,bnd->bcd", onehot, centred * centred)
              / counts[:, None]).sum(-1).sqrt()                       # (B, C)
    dist = torch.cdist(means, means, compute_mode="donot_use_mm_for_euclid_dist")
    overlap = (abs(nsigma) * (radius[:, :, None] + radius[:, None, :]) - dist).clamp(min=0.0)
    step = torch.minimum(0.5 * time_step ** 2 * constant * overlap, overlap)
    pushing = (overlap > 0) & (dist > 0)
    pushing.diagonal(dim1=1, dim2=2).fill_(False)
    weight = torch.where(pushing, step / torch.where(pushing, dist, 1.0), 0.0)
    return weight.sum(-1, keepdim=True) * means - weight @ means


def reference_statistics(reference: torch.Tensor, eps: float):
    """(B, R, D) reference features -> their per-dimension mean and max(std, eps), (B, D)."""
    return reference.mean(1), reference.std(1, correction=0).clamp(min=eps)


def ped_batched(x: torch.Tensor, labels: Labels, *, centre: torch.Tensor | None = None,
                spread: torch.Tensor | None = None, time_step: float = 0.1,
                exit_ratio: float = 0.5, nsigma: float = 0.6, constant: float = 1.0,
                eps: float = 1e-3, max_steps: int = 6):
    """(B, N, D) -> the PED-moved features (B, N, D) and ``info`` with ``steps`` (B,)
    taken and ``first_move`` (B,) (the first step's total move, rescaled units).

    ``centre`` and ``spread`` (B, D): the reference distribution's mean and std
    (:func:`reference_statistics`); both or neither (then the features' own).
    """
    check_ped_options(time_step, exit_ratio, nsigma, constant, eps, max_steps)
    if (centre is None) != (spread is None):
        raise ValueError("PED: give both the reference mean (centre) and std (spread), or neither")
    if centre is None:
        centre, scale = reference_statistics(x, eps)
    else:
        if centre.shape != x.shape[::2] or spread.shape != x.shape[::2]:
            raise ValueError(f"PED reference statistics must be (B, D) = {tuple(x.shape[::2])}, "
                             f"got {tuple(centre.shape)} and {tuple(spread.shape)}")
        scale = spread.clamp(min=eps)
    centre, scale = centre[:, None, :].to(x.dtype), scale[:, None, :].to(x.dtype)
    b = x.shape[0]
    steps = torch.zeros(b, dtype=torch.int64, device=x.device)
    first = None
    moving = torch.ones(b, dtype=torch.bool, device=x.device)
    for _ in range(max_steps):
        z = (x - centre) / scale
        moves = class_moves(z, labels, time_step, nsigma, constant)
        total = moves.abs().sum((1, 2))
        if first is None:
            first = total
        # the released exit test, as a ratio; a first step that moves nothing ends it
        moving &= (first > 0) & ~(total / torch.where(first > 0, first, 1.0) <= exit_ratio)
        if not bool(moving.any()):
            break
        moved = (z + moves[:, labels.codes]) * scale + centre
        x = torch.where(moving[:, None, None], moved, x)
        steps += moving.long()
    return x, dict(steps=steps, first_move=first)
