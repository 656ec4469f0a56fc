"""Small geometry helpers for the renderer and the camera samplers: vector normalisation, applying
4x4 transforms, ray/box intersection and a linspace over tensors of end points.

The names are upstream's (EG3D's math_utils) so code written against it keeps working.
"""

from __future__ import annotations

import torch

# ----------------------------------------------------------------------------


def normalize_vecs(vectors: torch.Tensor) -> torch.Tensor:
    """Unit vectors along the last dimension (no epsilon: a zero vector gives NaN, as upstream)."""
    return vectors / torch.norm(vectors, dim=-1, keepdim=True)


def torch_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dot product over the last dimension, keeping it as size 1."""
    return (x * y).sum(-1, keepdim=True)


def transform_vectors(matrix: torch.Tensor, vectors4: torch.Tensor) -> torch.Tensor:
    """Apply [N, 4, 4] transforms to row vectors [N, M, 4] (homogeneous): returns [N, M, 4]."""
    return torch.matmul(vectors4, matrix.transpose(-1, -2))

# ----------------------------------------------------------------------------


def get_ray_limits_box(rays_o: torch.Tensor, rays_d: torch.Tensor, box_side_length: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where rays o + t d enter and leave the axis-aligned cube [-L/2, L/2]^3 (slab method).

    rays_o, rays_d: [..., 3]. Returns (t_near, t_far), each [..., 1]. A ray that misses the cube gets
    t_near = -1 and t_far = -2, so `t_far > t_near` tells hits from misses. t is not clamped at 0:
    a camera inside the cube gets a negative t_near (upstream does the same).
    """
    half = box_side_length / 2
    inside = (rays_o.abs() <= half)                                 # Per axis: origin between the two planes.
    inv_d = 1.0 / rays_d
    t1 = (-half - rays_o) * inv_d
    t2 = (half - rays_o) * inv_d
    lo = torch.minimum(t1, t2)
    hi = torch.maximum(t1, t2)
    # An axis the ray runs parallel to (d = 0) either never restricts t (origin between its planes)
    # or rules the whole ray out; spelling that out avoids 0 * inf = NaN.
    parallel = rays_d == 0
    lo = torch.where(parallel, torch.where(inside, -torch.inf, torch.inf), lo)
    hi = torch.where(parallel, torch.where(inside, torch.inf, -torch.inf), hi)
    t_near = lo.amax(dim=-1, keepdim=True)
    t_far = hi.amin(dim=-1, keepdim=True)
    miss = ~(t_far > t_near)
    t_near = torch.where(miss, torch.full_like(t_near, -1.0), t_near)
    t_far = torch.where(miss, torch.full_like(t_far, -2.0), t_far)
    return t_near, t_far


def linspace(start: torch.Tensor, stop: torch.Tensor, num: int) -> torch.Tensor:
    """`num` evenly spaced values between tensors `start` and `stop` (same shape S): returns [num, *S]."""
    if num < 2:
        raise ValueError(f'linspace: need at least 2 points, got {num}')
    steps = torch.arange(num, dtype=start.dtype, device=start.device) / (num - 1)
    steps = steps.reshape([num] + [1] * start.ndim)
    return start[None] + steps * (stop - start)[None]
