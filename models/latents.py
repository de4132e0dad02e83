"""Latents beyond one seed: the truncation trick, spherical interpolation, latent walks.

Everything is drawn on the CPU from a request's own `torch.Generator`, so the same inputs give
the same latents on every device and in every batch. Torch is imported where it is used, so
the API can size a walk (`walk_length`) without loading it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def truncated_normal(
    n: int, dim: int, gen: torch.Generator, truncation: float | None = None
) -> torch.Tensor:
    """(n, dim) standard normal; with `truncation` t, each component outside [-t, t] is drawn
    again from `gen` until it falls inside (BigGAN's truncation trick for a plain Gaussian
    latent). A t far in the tail redraws nothing: the same numbers as no truncation, and the
    generator is left in the same state."""
    import torch

    z = torch.randn(n, dim, generator=gen)
    if truncation is None:
        return z
    if not truncation > 0:
        raise ValueError(f"truncation must be > 0, got {truncation}")
    outside = z.abs() > truncation
    while bool(outside.any()):
        # row-major order of the components left outside: the same redraws every time
        z[outside] = torch.randn(int(outside.sum()), generator=gen)
        outside = z.abs() > truncation
    return z


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the rows a (D,) -> b (D,) at each of t (T,): (T, D).

    The angle is the angle between the directions of a and b; the norm is interpolated along
    with it (for equal norms it stays that norm). Nearly parallel vectors are interpolated
    linearly, where sin(omega) is too small to divide by. t = 0 gives a and t = 1 gives b
    exactly."""
    import torch

    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]  # (D,), (D,), (T, 1)
    cos = (a64 @ b64) / (a64.norm() * b64.norm()).clamp_min(1e-300)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    if float(so) < 1e-6:
        out = (1.0 - t64) * a64 + t64 * b64
    else:
        out = (torch.sin((1.0 - t64) * omega) * a64 + torch.sin(t64 * omega) * b64) / so
    out = out.to(a.dtype)
    out[t == 0] = a  # the keyframes themselves, not a rounding of them
    out[t == 1] = b
    return out


@dataclass(frozen=True)
class Walk:
    """A walk's inputs: z (F, z_dim) and, for a conditional generator, class weights
    (F, num_classes) (one-hot at the keyframes, a linear blend between two classes between
    them); `keyframes[i]` is the frame index of the i-th seed."""

    z: torch.Tensor
    y: torch.Tensor | None
    keyframes: list[int]


def walk_length(keys: int, frames: int, loop: bool) -> int:
    """Frames of a walk through `keys` keyframes, `frames` per segment: each segment starts at
    its keyframe and stops before the next one; an open walk ends on its last keyframe, a loop
    goes back to the first (and leaves it out, so the animation repeats without a stutter)."""
    segments = keys if loop else keys - 1
    return segments * frames + (0 if loop else 1)


def walk(
    keys_z: torch.Tensor,
    frames: int,
    loop: bool = False,
    keys_y: Sequence[int] | None = None,
    num_classes: int = 0,
) -> Walk:
    """The walk through the keyframe latents `keys_z` (K, z_dim): slerp in z between each
    keyframe and the next, `frames` per segment (see `walk_length`); with `keys_y` (one class
    per keyframe) the class weights move linearly from one keyframe's class to the next's, at
    the same pace as z."""
    import torch

    k = keys_z.shape[0]
    if k < 2:
        raise ValueError(f"a walk needs at least 2 keyframes, got {k}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if keys_y is not None and len(keys_y) != k:
        raise ValueError(f"{len(keys_y)} labels for {k} keyframes")
    pairs = [(i, i + 1) for i in range(k - 1)] + ([(k - 1, 0)] if loop else [])
    t = torch.arange(frames, dtype=torch.float64) / frames  # (frames,) in [0, 1)
    zs, ys = [], []
    onehot = None
    if keys_y is not None:
        onehot = torch.eye(num_classes, dtype=torch.float32)[torch.tensor(list(keys_y))]
    for i, j in pairs:
        zs.append(slerp(keys_z[i], keys_z[j], t))
        if onehot is not None:
            tt = t.float()[:, None]
            ys.append((1.0 - tt) * onehot[i] + tt * onehot[j])
    if not loop:
        zs.append(keys_z[k - 1 : k])
        if onehot is not None:
            ys.append(onehot[k - 1 : k])
    keyframes = [i * frames for i in range(k)]
    return Walk(torch.cat(zs), None if onehot is None else torch.cat(ys), keyframes)
