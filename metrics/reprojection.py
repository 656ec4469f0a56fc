"""3D consistency by depth reprojection: a generator that learned 3D renders view B as view A's surface
seen from B, so warping B into A through A's rendered depth reproduces A.

For each pixel of view A, the point at its depth along its ray (EG3D cameras: OpenCV cam2world, normalised
intrinsics, pixel centres at (j + 0.5) / R, depth = distance along the unit ray) is projected into view B
and B's image is sampled there bilinearly. The error is the mean absolute colour difference over A's
foreground pixels that land inside B (for a generator: not black, more than half opaque in the
renderer, and one pixel in from the silhouette, where the resized depth mixes in the background's). The baseline replaces A's depth by a fronto-parallel plane at the
mean camera-space z of A's foreground: an image with no 3D structure (a flat card) reprojects exactly that
way, so depth that encodes the object's shape must score lower.

    err = reprojection_error(img_a, depth_a, c_a, img_b, c_b, mask_a)
    flat = reprojection_error(img_a, flat_depth(depth_a, c_a, mask_a), c_a, img_b, c_b, mask_a)
"""

from __future__ import annotations

import math

import torch

# ----------------------------------------------------------------------------
# Geometry (our own statement of the EG3D camera model, docs/camera_conventions.md).


def _split(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if c.ndim != 2 or c.shape[1] != 25:
        raise ValueError(f'reprojection: camera labels must be [N, 25], got {list(c.shape)}')
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3)


def pixel_rays(c: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Camera centres [N, 3], unit ray directions [N, R*R, 3] (row-major pixels) and, per ray, the
    camera-space z of the point at distance 1 along it [N, R*R] (to turn distances into z and back)."""
    pose, k = _split(c)
    uv = (torch.arange(resolution, dtype=c.dtype, device=c.device) + 0.5) / resolution
    v, u = torch.meshgrid(uv, uv, indexing='ij')
    pix = torch.stack([u.flatten(), v.flatten(), torch.ones_like(u.flatten())], dim=-1)     # [R*R, 3]
    cam = pix @ torch.linalg.inv(k).transpose(1, 2)                                         # [N, R*R, 3], z = 1
    length = cam.norm(dim=-1)
    dirs = cam @ pose[:, :3, :3].transpose(1, 2) / length[..., None]
    return pose[:, :3, 3], dirs, 1 / length


def project(points: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World points [N, M, 3] -> normalised image coordinates [N, M, 2] (u, v in [0, 1] inside the image)
    and camera-space z [N, M] under cameras c [N, 25]."""
    pose, k = _split(c)
    cam = (points - pose[:, None, :3, 3]) @ pose[:, :3, :3]        # World -> camera: R^T (p - o).
    z = cam[..., 2]
    uvw = cam @ k.transpose(1, 2)
    return uvw[..., :2] / uvw[..., 2:3], z


def _resize_depth(depth: torch.Tensor, resolution: int) -> torch.Tensor:
    if depth.ndim != 4 or depth.shape[1] != 1:
        raise ValueError(f'reprojection: depth must be [N, 1, H, W], got {list(depth.shape)}')
    if depth.shape[-1] != resolution:
        depth = torch.nn.functional.interpolate(depth, size=(resolution, resolution), mode='bilinear',
                                                align_corners=False)
    return depth


def flat_depth(depth: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Ray distances [N, 1, R, R] of a fronto-parallel plane at the mean camera-space z of `depth` over
    `mask` [N, 1, R, R] (the whole image when None); depth is resized to the mask's resolution."""
    resolution = depth.shape[-1] if mask is None else mask.shape[-1]
    depth = _resize_depth(depth, resolution)
    _, _, z_per_unit = pixel_rays(c, resolution)
    z = depth.flatten(1) * z_per_unit
    w = torch.ones_like(z) if mask is None else mask.flatten(1).to(z.dtype)
    z_mean = (z * w).sum(dim=1, keepdim=True) / w.sum(dim=1, keepdim=True).clamp(min=1)
    return (z_mean / z_per_unit).reshape(depth.shape)


def warp(img_b: torch.Tensor, depth_a: torch.Tensor, c_a: torch.Tensor,
         c_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """View B's image [N, C, R, R] sampled at the reprojections of view A's pixels through A's depth
    (resized to R), and where those land inside B in front of its camera [N, 1, R, R] (bool)."""
    n, _, resolution, _ = img_b.shape
    depth_a = _resize_depth(depth_a, resolution)
    origin, dirs, _ = pixel_rays(c_a, resolution)
    points = origin[:, None] + dirs * depth_a.flatten(1)[..., None]
    uv, z = project(points, c_b)
    grid = (2 * uv - 1).reshape(n, resolution, resolution, 2).to(img_b.dtype)   # align_corners=False: pixel
    sampled = torch.nn.functional.grid_sample(img_b, grid, mode='bilinear',    # centres at (j + 0.5) / R.
                                              padding_mode='border', align_corners=False)
    inside = (uv >= 0).all(dim=-1) & (uv <= 1).all(dim=-1) & (z > 0)
    return sampled, inside.reshape(n, 1, resolution, resolution)


def reprojection_error(img_a: torch.Tensor, depth_a: torch.Tensor, c_a: torch.Tensor, img_b: torch.Tensor,
                       c_b: torch.Tensor, mask_a: torch.Tensor | None = None) -> torch.Tensor:
    """Per image [N]: mean |A - B warped into A| over channels and the pixels of mask_a [N, 1, R, R] that
    land inside B (all pixels when mask_a is None). Images [N, C, R, R] in any common range; depth_a
    [N, 1, r, r] ray distances (bilinearly resized to R). NaN for an image with no valid pixel."""
    if img_a.shape != img_b.shape or img_a.ndim != 4 or img_a.shape[-1] != img_a.shape[-2]:
        raise ValueError(f'reprojection: images must be equal square [N, C, R, R], got {list(img_a.shape)} '
                         f'and {list(img_b.shape)}')
    sampled, valid = warp(img_b, depth_a, c_a, c_b)
    if mask_a is not None:
        valid = valid & mask_a.bool()
    diff = (img_a - sampled).abs().mean(dim=1, keepdim=True)
    count = valid.flatten(1).sum(dim=1)
    total = (diff * valid).flatten(1).sum(dim=1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, math.nan))


def foreground(img: torch.Tensor, threshold: float = 0.08, opacity: torch.Tensor | None = None,
               erode: int = 0) -> torch.Tensor:
    """[N, 1, R, R] bool: pixels brighter than `threshold` in some channel (images in [-1, 1] on a black
    background, what an empty EG3D volume renders) and, given the renderer's opacity per ray [N, 1, r, r],
    more than half opaque: silhouette halos, where the expected depth is mostly the background's, drop out."""
    mask = ((img + 1) / 2).amax(dim=1, keepdim=True) > threshold
    if opacity is not None:
        mask &= torch.nn.functional.interpolate(opacity, size=img.shape[-2:], mode='bilinear',
                                                align_corners=False) > 0.5
    for _ in range(erode):  # Drop the border pixels, whose resized depth blends in the background's.
        mask = -torch.nn.functional.max_pool2d(-mask.float(), 3, stride=1, padding=1) > 0.5
    return mask

# ----------------------------------------------------------------------------
# The check on a generator.


@torch.no_grad()
def generator_reprojection(G, seeds: list[int], yaw: float = 0.35, pitch: float = 0.0, erode: int = 1,
                           device: torch.device | str = 'cpu') -> dict[str, float]:
    """Mean reprojection errors of G's super-resolved images (in [0, 1] units) over `seeds`, views A and B at
    yaws -yaw and +yaw about the front (same pitch), each reprojected into the other: through the
    rendered depth ('rendered') and through a flat plane at the mean depth ('flat'). The latent of a seed
    is mapped with the frontal camera, as gen_samples.py does, so both views show the same object."""
    from training import inference
    device = torch.device(device)
    focal = float(G.rendering_kwargs.get('focal', 4.2647))
    intrinsics = torch.tensor([[focal, 0, 0.5], [0, focal, 0.5], [0, 0, 1]], dtype=torch.float32)
    cam = lambda h: inference.orbit_camera(G, math.pi / 2 + h, math.pi / 2 + pitch, intrinsics, device)
    c_front, c_a, c_b = cam(0.0), cam(-yaw), cam(yaw)
    sums = {'rendered': 0.0, 'flat': 0.0}
    count = 0
    opacity = []    # The renderer's accumulated opacity per ray [N, M, 1], caught on its way out.
    hook = G.renderer.register_forward_hook(lambda module, inputs, output: opacity.append(output[2]))
    try:
        outs = []
        for seed in seeds:
            torch.manual_seed(seed)
            ws = G.mapping(inference.latent(seed, G.z_dim, device), c_front)
            for c in (c_a, c_b):
                out = G.synthesis(ws, c)
                out['opacity'] = opacity.pop().reshape(out['image_depth'].shape)
                outs.append(out)
    finally:
        hook.remove()
    for out_a, out_b in zip(outs[0::2], outs[1::2]):
        for (src, c_src), (dst, c_dst) in [((out_a, c_a), (out_b, c_b)), ((out_b, c_b), (out_a, c_a))]:
            img_src, img_dst = (src['image'] + 1) / 2, (dst['image'] + 1) / 2
            mask = foreground(src['image'], opacity=src['opacity'], erode=erode)
            depth = src['image_depth']
            errors = {'rendered': reprojection_error(img_src, depth, c_src, img_dst, c_dst, mask),
                      'flat': reprojection_error(img_src, flat_depth(depth, c_src, mask), c_src, img_dst, c_dst,
                                                 mask)}
            if any(torch.isnan(e).any() for e in errors.values()):
                continue    # No foreground: nothing to compare.
            for key, e in errors.items():
                sums[key] += float(e.sum())
            count += 1
    if count == 0:
        return {'rendered': math.nan, 'flat': math.nan, 'pairs': 0}
    return {'rendered': sums['rendered'] / count, 'flat': sums['flat'] / count, 'pairs': count}
