"""metrics/reprojection.py against closed forms: the camera model round trip, an identity warp, a camera
translated parallel to a textured plane (an exact pixel shift), flat planes, and the analytic box of
training/synthetic.py seen from two yaws with its exact ray-cast depth. Also the mean-image SWD baseline
against the generator path of the same metric."""

import math

import numpy as np
import pytest
import torch

import dnnlib
from metrics import metric_utils, reprojection, sliced_wasserstein
from training import synthetic


def _cameras(yaws, pitch=0.0, radius=2.7, focal=4.2647) -> torch.Tensor:
    """EG3D labels [N, 25] (float64) on the orbit, aimed at the origin (training/synthetic.py's model)."""
    h = np.pi / 2 + np.asarray(yaws, np.float64)
    origin = synthetic.orbit_origin(h, np.full_like(h, np.pi / 2 + pitch), radius)
    pose = synthetic.lookat_cam2world(origin, np.zeros_like(origin))
    return torch.from_numpy(synthetic.make_camera_labels(pose, focal))


def test_rays_and_projection_round_trip():
    rng = np.random.default_rng()
    c = _cameras(rng.uniform(-0.6, 0.6, 3), pitch=float(rng.uniform(-0.2, 0.2)))
    res = 8
    origin, dirs, z_per_unit = reprojection.pixel_rays(c, res)
    torch.testing.assert_close(dirs.norm(dim=-1), torch.ones(3, res * res, dtype=torch.float64))
    # Directions agree with training/synthetic.py's independent ray generator.
    for i in range(3):
        o_ref, d_ref = synthetic.camera_rays(c[i].numpy(), res)
        np.testing.assert_allclose(origin[i].numpy(), o_ref, atol=1e-12)
        np.testing.assert_allclose(dirs[i].numpy(), d_ref, atol=1e-12)
    t = torch.from_numpy(rng.uniform(2.0, 3.5, [3, res * res]))
    uv, z = reprojection.project(origin[:, None] + dirs * t[..., None], c)
    centres = (torch.arange(res, dtype=torch.float64) + 0.5) / res
    torch.testing.assert_close(uv[..., 0], centres.repeat(res).expand(3, -1))
    torch.testing.assert_close(uv[..., 1], centres.repeat_interleave(res).expand(3, -1))
    torch.testing.assert_close(z, t * z_per_unit)
    # Ray distance -> camera z: z = t cos(angle to the optical axis).
    axis = c[:, :16].reshape(-1, 4, 4)[:, :3, 2]
    torch.testing.assert_close(z_per_unit, (dirs * axis[:, None]).sum(-1))


def test_identity_warp_is_exact_for_any_depth():
    rng = np.random.default_rng()
    c = _cameras([rng.uniform(-0.5, 0.5)])
    img = torch.from_numpy(rng.uniform(0.1, 1, [1, 3, 16, 16]))
    depth = torch.from_numpy(rng.uniform(2.2, 3.2, [1, 1, 8, 8]))
    err = reprojection.reprojection_error(img, depth, c, img, c)
    assert float(err) < 1e-10
    assert float(reprojection.reprojection_error(img, depth, c, img.flip(-1), c)) > 0.1  # Can fail.


def test_translation_parallel_to_a_textured_plane_is_a_pixel_shift():
    rng = np.random.default_rng()
    res, k = 16, int(rng.integers(1, 4))
    c_a = _cameras([0.0])
    d = float(rng.uniform(2.3, 3.0))                    # Camera-space z of the plane.
    fx = float(c_a[0, 16])
    shift = k * d / (fx * res)                          # World distance that moves the plane k pixels.
    c_b = c_a.clone()
    pose_b = c_b[:, :16].view(-1, 4, 4)                 # A view: edits c_b.
    pose_b[:, :3, 3] += shift * pose_b[:, :3, 0]       # Along the camera's +x (image right).
    img_a = torch.from_numpy(rng.uniform(0.1, 1, [1, 3, res, res]))
    img_b = torch.roll(img_a, -k, dims=-1)              # B's pixel j shows A's pixel j + k.
    _, _, z_per_unit = reprojection.pixel_rays(c_a, res)
    plane = (d / z_per_unit).reshape(1, 1, res, res)    # Ray distances of the plane z = d.
    sampled, inside = reprojection.warp(img_b, plane, c_a, c_b)
    assert int(inside.sum()) == res * (res - k)         # Columns j >= k land inside B.
    torch.testing.assert_close(sampled[..., k:], img_a[..., k:])
    assert float(reprojection.reprojection_error(img_a, plane, c_a, img_b, c_b)) < 1e-10
    # The flat plane at the mean depth of a plane is that plane.
    torch.testing.assert_close(reprojection.flat_depth(plane, c_a), plane)
    assert float(reprojection.reprojection_error(img_a, 1.3 * plane, c_a, img_b, c_b)) > 0.05


def test_flat_depth_is_a_plane_at_the_masked_mean_z():
    rng = np.random.default_rng()
    c = _cameras(rng.uniform(-0.4, 0.4, 2))
    depth = torch.from_numpy(rng.uniform(2.2, 3.2, [2, 1, 8, 8]))
    mask = torch.from_numpy(rng.uniform(size=[2, 1, 8, 8]) < 0.5)
    flat = reprojection.flat_depth(depth, c, mask)
    _, dirs, z_per_unit = reprojection.pixel_rays(c, 8)
    z = depth.flatten(1) * z_per_unit
    expected = torch.stack([z[i][mask[i].flatten()].mean() for i in range(2)])
    torch.testing.assert_close(flat.flatten(1) * z_per_unit, expected[:, None].expand(-1, 64))


def test_box_reprojects_through_its_true_depth_far_better_than_through_a_flat_plane():
    rng = np.random.default_rng()
    scene = synthetic.make_scene('box', rng)
    res, yaw = 32, 0.35
    c = _cameras([-yaw, yaw])
    imgs, depths, masks = [], [], []
    for i in range(2):
        rgb, alpha = synthetic.render_scene(scene, c[i].numpy(), res, ssaa=1)
        origin, dirs = synthetic.camera_rays(c[i].numpy(), res)
        t, _, _ = synthetic.cast_rays(scene, origin, dirs)
        imgs.append(torch.from_numpy(rgb).permute(2, 0, 1))
        depths.append(torch.from_numpy(np.where(np.isfinite(t), t, 3.3).reshape(1, res, res)))
        masks.append(torch.from_numpy(alpha > 0.5)[None])
    img, depth, mask = torch.stack(imgs), torch.stack(depths), torch.stack(masks)
    for a, b in [(0, 1), (1, 0)]:
        args = (img[a:a + 1], c[a:a + 1], img[b:b + 1], c[b:b + 1], mask[a:a + 1])
        true = float(reprojection.reprojection_error(args[0], depth[a:a + 1], *args[1:]))
        flat = float(reprojection.reprojection_error(args[0], reprojection.flat_depth(depth[a:a + 1], c[a:a + 1],
                                                                                     mask[a:a + 1]), *args[1:]))
        # True depth: only faces shaded differently from the other side and occlusions differ.
        assert true < 0.5 * flat, (true, flat)
        assert flat > 0.02
    assert int(reprojection.foreground(img * 2 - 1).sum()) == pytest.approx(int(mask.sum()), rel=0.05)


class _Upsample(torch.nn.Module):
    """Super-resolution stand-in: the raw image, bilinearly resized (keeps the renders' geometry)."""

    def __init__(self, resolution: int):
        super().__init__()
        self.resolution = resolution

    def forward(self, rgb, x, ws, **kwargs):
        return torch.nn.functional.interpolate(rgb, size=(self.resolution, self.resolution), mode='bilinear',
                                               align_corners=False)


def test_generator_reprojection_of_an_analytic_ellipsoid():
    from tests.generators import Ellipsoid, ellipsoid_G, tiny_G
    rng = np.random.default_rng()
    ellipsoid = Ellipsoid(centre=rng.uniform(-0.05, 0.05, 3), axes=rng.uniform(0.15, 0.25, 3))
    G = ellipsoid_G(ellipsoid)
    G.rendering_kwargs.update(depth_resolution=24, depth_resolution_importance=24, avg_camera_pivot=[0, 0, 0])
    G.neural_rendering_resolution = 32
    G.superresolution = _Upsample(32)
    out = reprojection.generator_reprojection(G, seeds=[0], yaw=0.35)
    assert out['pairs'] == 2
    # Soft density round the surface blurs the rendered depth a little; a flat card is far worse.
    assert out['rendered'] < 0.7 * out['flat'] and out['flat'] > 0.03, out
    # A random tiny generator: finite numbers, same keys (no claim about its 3D).
    out = reprojection.generator_reprojection(tiny_G(), seeds=[0, 1], yaw=0.3)
    assert set(out) == {'rendered', 'flat', 'pairs'}


# ----------------------------------------------------------------------------
# The mean-image SWD baseline equals compute_swd with a generator that outputs the mean image.


class _Constant(torch.nn.Module):
    def __init__(self, image_uint8: np.ndarray):
        super().__init__()
        self.z_dim, self.c_dim, self.img_resolution = 4, 25, image_uint8.shape[-1]
        # + 0.25 so that the metric's (x * 127.5 + 128).to(uint8) truncation gives back the same integers.
        self.register_buffer('image', torch.from_numpy((image_uint8.astype(np.float64) - 128 + 0.25) / 127.5))

    def forward(self, z, c, **kwargs):
        return {'image': self.image.float()[None].expand(len(z), -1, -1, -1)}


def test_mean_image_swd_equals_the_generator_path_and_exceeds_real_vs_real(synthetic32, tmp_path):
    kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=synthetic32, use_labels=True)
    opts = metric_utils.MetricOptions(dataset_kwargs=kwargs, num_workers=0, cache_dir=str(tmp_path), batch_size=8)
    per_level, avg = sliced_wasserstein.compute_swd_mean_image(opts, 16)
    dataset = dnnlib.construct_class_by_name(**kwargs)
    mean = np.rint(np.mean([dataset[i][0] for i in range(16)], axis=0, dtype=np.float64)).astype(np.uint8)
    opts.G = _Constant(mean)
    ref_levels, ref_avg = sliced_wasserstein.compute_swd(opts, 16)
    assert per_level == pytest.approx(ref_levels, rel=1e-6)
    assert avg == pytest.approx(ref_avg, rel=1e-6) and avg > 0
    # The real images against themselves (other descriptor positions) score far lower.
    extractor = sliced_wasserstein.LaplacianDescriptors(resolution=32, seed=5)
    images = torch.from_numpy(np.stack([dataset[i][0] for i in range(16)]))
    real = extractor(images, np.arange(16)).numpy()
    other = sliced_wasserstein.LaplacianDescriptors(resolution=32, seed=6)(images, np.arange(16)).numpy()
    same = np.mean(list(sliced_wasserstein.swd_from_features(extractor, real, other).values()))
    assert avg > 1.5 * same, (avg, same)
