"""Per-pixel camera rays from the 25-number camera label (EG3D Sec. 4; docs/camera_conventions.md).

A label is 16 numbers of the 4x4 cam2world matrix (OpenCV camera: x right, y down, z forward) then
9 numbers of the 3x3 intrinsics normalised by the image size (focal lengths in image widths, principal
point in [0, 1]). Because the intrinsics are normalised, one label renders at any resolution.
"""

from __future__ import annotations

import torch

from torch_utils import misc

# ----------------------------------------------------------------------------


def split_camera_label(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera labels [N, 25] -> (cam2world [N, 4, 4], normalised intrinsics [N, 3, 3])."""
    misc.assert_shape(c, [None, 25], name='camera label c')
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)


def make_camera_label(cam2world: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """(cam2world [N, 4, 4], intrinsics [N, 3, 3] or [3, 3]) -> camera labels [N, 25]."""
    misc.assert_shape(cam2world, [None, 4, 4], name='cam2world')
    if intrinsics.ndim == 2:
        intrinsics = intrinsics.unsqueeze(0).expand(cam2world.shape[0], -1, -1)
    misc.assert_shape(intrinsics, [cam2world.shape[0], 3, 3], name='intrinsics')
    return torch.cat([cam2world.reshape(-1, 16), intrinsics.reshape(-1, 9)], dim=1)

# ----------------------------------------------------------------------------


class RaySampler(torch.nn.Module):
    """Rays through the pixel centres of an R x R image, pixels in row-major order (m = row * R + col).

    Returns (ray_origins, ray_directions), each [N, R*R, 3]: every origin is the camera position and
    directions are unit vectors, so depths along a ray are Euclidean distances.
    Not persistent: official pickles store it by import path (with five None attributes in its state,
    which this class accepts and ignores).
    """

    def __init__(self):
        super().__init__()

    def forward(self, cam2world_matrix: torch.Tensor, intrinsics: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
        misc.assert_shape(cam2world_matrix, [None, 4, 4], name='cam2world_matrix')
        misc.assert_shape(intrinsics, [cam2world_matrix.shape[0], 3, 3], name='intrinsics')
        n, res = cam2world_matrix.shape[0], int(resolution)
        dtype, device = cam2world_matrix.dtype, cam2world_matrix.device

        # Normalised pixel-centre coordinates: x follows the column, y the row.
        centres = (torch.arange(res, dtype=dtype, device=device) + 0.5) / res
        y_img, x_img = torch.meshgrid(centres, centres, indexing='ij')
        x_img = x_img.reshape(1, -1)
        y_img = y_img.reshape(1, -1)

        # Invert the pinhole projection (with skew s): u = fx x + s y + cx, v = fy y + cy at depth 1.
        fx, fy = intrinsics[:, 0, 0, None], intrinsics[:, 1, 1, None]
        cx, cy, sk = intrinsics[:, 0, 2, None], intrinsics[:, 1, 2, None], intrinsics[:, 0, 1, None]
        y_cam = (y_img - cy) / fy
        x_cam = (x_img - cx - sk * y_cam) / fx
        points_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)     # [N, M, 3]

        rotation = cam2world_matrix[:, :3, :3]
        origin = cam2world_matrix[:, :3, 3]
        ray_dirs = torch.nn.functional.normalize(points_cam @ rotation.transpose(1, 2), dim=-1)
        ray_origins = origin.unsqueeze(1).expand(n, res * res, 3)
        return ray_origins, ray_dirs
