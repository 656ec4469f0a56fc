"""Camera poses and intrinsics in EG3D's conventions (docs/camera_conventions.md).

World: +y up, the frontal camera on +z looking toward -z. Cameras are OpenCV-style (x right, y down,
z forward); a pose is a 4x4 cam2world matrix. Poses on an orbit are given by a yaw h and a pitch v
(both pi/2 for the frontal view); the names, signatures and quirks are upstream's, so EG3D scripts
keep working:
- the orbit sphere is centred on the world origin; LookAtPoseSampler only *aims* at its pivot;
- the pitch v is mapped to the polar angle arccos(1 - 2 v / pi), not used as an angle directly;
- the samplers always draw their two random numbers, even with zero spread;
- FOV_to_intrinsics divides the focal length by an extra 1.414, so its "fov" is not the true FOV.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from training.volumetric_rendering import math_utils
from training.volumetric_rendering.ray_sampler import make_camera_label, split_camera_label

__all__ = ['GaussianCameraPoseSampler', 'LookAtPoseSampler', 'UniformCameraPoseSampler', 'create_cam2world_matrix',
           'FOV_to_intrinsics', 'make_camera_label', 'split_camera_label', 'orbit_origins']

# ----------------------------------------------------------------------------


def orbit_origins(h: torch.Tensor, v: torch.Tensor, radius: float) -> torch.Tensor:
    """Camera positions [N, 3] on the sphere of `radius` about the world origin for yaw h, pitch v [N, 1].

    The polar angle (from +y) is phi = arccos(1 - 2 v / pi) with v clamped to [1e-5, pi - 1e-5], and
    the azimuth is measured so that h = pi/2 is on +z and larger h moves toward +x:
    (x, y, z) = r (-sin(phi) cos(h), cos(phi), sin(phi) sin(h)).
    """
    v = torch.clamp(v, 1e-5, math.pi - 1e-5)
    phi = torch.arccos(1 - 2 * (v / math.pi))
    theta = h
    origins = torch.zeros((h.shape[0], 3), dtype=h.dtype, device=h.device)
    origins[:, 0:1] = radius * torch.sin(phi) * torch.cos(math.pi - theta)
    origins[:, 2:3] = radius * torch.sin(phi) * torch.sin(math.pi - theta)
    origins[:, 1:2] = radius * torch.cos(phi)
    return origins


def create_cam2world_matrix(forward_vector: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """cam2world [N, 4, 4] of an OpenCV camera at `origin` [N, 3] looking along `forward_vector` [N, 3].

    With world up (0, 1, 0): right = -normalize(up x forward), camera y = normalize(forward x right)
    (pointing down in the image). Columns: right, camera y, forward, origin. Undefined (NaN) when
    forward is parallel to the world up, as upstream.
    """
    if forward_vector.ndim != 2 or forward_vector.shape[-1] != 3 or origin.shape != forward_vector.shape:
        raise ValueError(f'create_cam2world_matrix: expected forward_vector and origin [N, 3], '
                         f'got {list(forward_vector.shape)} and {list(origin.shape)}')
    forward = math_utils.normalize_vecs(forward_vector)
    up = torch.tensor([0, 1, 0], dtype=forward.dtype, device=forward.device).expand_as(forward)
    right = -math_utils.normalize_vecs(torch.cross(up, forward, dim=-1))
    cam_y = math_utils.normalize_vecs(torch.cross(forward, right, dim=-1))
    cam2world = torch.eye(4, dtype=forward.dtype, device=forward.device).repeat(forward.shape[0], 1, 1)
    cam2world[:, :3, :3] = torch.stack([right, cam_y, forward], dim=-1)
    cam2world[:, :3, 3] = origin
    return cam2world


def FOV_to_intrinsics(fov_degrees: float, device='cpu') -> torch.Tensor:
    """Normalised intrinsics [3, 3]: focal = 1 / (tan(fov / 2) * 1.414), principal point (0.5, 0.5).

    Upstream's formula, kept with its constants (3.14159 for pi and the 1.414 factor): the true
    horizontal FOV is 2 atan(0.5 / focal), e.g. 13.37 degrees for fov_degrees = 18.837 (FFHQ).
    """
    focal = float(1 / (math.tan(fov_degrees * 3.14159 / 360) * 1.414))
    return torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], device=device)

# ----------------------------------------------------------------------------


def _as_lookat(lookat_position, batch_size: int, device) -> torch.Tensor:
    lookat = torch.as_tensor(lookat_position, dtype=torch.float32, device=device)
    if lookat.shape[-1] != 3 or lookat.ndim > 2:
        raise ValueError(f'lookat_position must be [3] or [N, 3], got {list(lookat.shape)}')
    return lookat.reshape(-1, 3).expand(batch_size, 3)


class GaussianCameraPoseSampler:
    """Poses with yaw ~ N(h, h_std) and pitch ~ N(v, v_std) on the orbit, looking at the world origin.

    World frame as upstream's docstring puts it: y up, z forward (from the subject toward the frontal
    camera), x left (the subject's left, which is image right in the frontal view).
        pose = GaussianCameraPoseSampler.sample(math.pi/2, math.pi/2, radius=2.7)   # frontal, [1, 4, 4]
    """

    @staticmethod
    def sample(horizontal_mean: float, vertical_mean: float, horizontal_stddev: float = 0, vertical_stddev: float = 0,
               radius: float = 1, batch_size: int = 1, device='cpu') -> torch.Tensor:
        h = torch.randn((batch_size, 1), device=device) * horizontal_stddev + horizontal_mean
        v = torch.randn((batch_size, 1), device=device) * vertical_stddev + vertical_mean
        origins = orbit_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(-origins), origins)


class LookAtPoseSampler:
    """Poses on the orbit about the world origin (yaw ~ N(h, h_std), pitch ~ N(v, v_std)) aimed at
    `lookat_position`. The orbit is not centred on the look-at point (upstream's behaviour).
        pose = LookAtPoseSampler.sample(math.pi/2 + 0.4, math.pi/2, torch.tensor([0, 0, 0.2]), radius=2.7)
    """

    @staticmethod
    def sample(horizontal_mean: float, vertical_mean: float, lookat_position: torch.Tensor | Sequence[float],
               horizontal_stddev: float = 0, vertical_stddev: float = 0, radius: float = 1, batch_size: int = 1,
               device='cpu') -> torch.Tensor:
        h = torch.randn((batch_size, 1), device=device) * horizontal_stddev + horizontal_mean
        v = torch.randn((batch_size, 1), device=device) * vertical_stddev + vertical_mean
        origins = orbit_origins(h, v, radius)
        forward = math_utils.normalize_vecs(_as_lookat(lookat_position, batch_size, device) - origins)
        return create_cam2world_matrix(forward, origins)


class UniformCameraPoseSampler:
    """Poses with yaw ~ U[h - h_std, h + h_std] and pitch ~ U[v - v_std, v + v_std] on the orbit,
    looking at the world origin."""

    @staticmethod
    def sample(horizontal_mean: float, vertical_mean: float, horizontal_stddev: float = 0, vertical_stddev: float = 0,
               radius: float = 1, batch_size: int = 1, device='cpu') -> torch.Tensor:
        h = (torch.rand((batch_size, 1), device=device) * 2 - 1) * horizontal_stddev + horizontal_mean
        v = (torch.rand((batch_size, 1), device=device) * 2 - 1) * vertical_stddev + vertical_mean
        origins = orbit_origins(h, v, radius)
        return create_cam2world_matrix(math_utils.normalize_vecs(-origins), origins)
