"""Mirrored camera labels are right for mirrored images: rendering the x-mirrored tri-plane from the
mirrored label gives the horizontally flipped image of the original render (our renderer, jitter off)."""

import numpy as np
import pytest
import torch

from training.dataset import mirror_camera_label
from training.synthetic import CameraDistribution, sample_camera_labels
from training.triplane import OSGDecoder
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import ImportanceRenderer


def flip_planes_along_x(planes: torch.Tensor) -> torch.Tensor:
    """Planes [N, 3, C, H, W] of the world mirrored across x = 0. Upstream's planes map points to
    (x, y), (x, z) and (z, x), the first coordinate indexing W: x runs along W on planes 0 and 1 and
    along H on plane 2."""
    return torch.stack([planes[:, 0].flip(-1), planes[:, 1].flip(-1), planes[:, 2].flip(-2)], dim=1)


def render(planes, decoder, c, resolution, options):
    cam2world, intrinsics = c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)
    origins, dirs = RaySampler()(cam2world, intrinsics, resolution)
    features, depth, _ = ImportanceRenderer()(planes, decoder, origins, dirs, options)
    n = c.shape[0]
    image = features.permute(0, 2, 1).reshape(n, -1, resolution, resolution)
    return image[:, :3], depth.permute(0, 2, 1).reshape(n, 1, resolution, resolution)


@pytest.mark.parametrize('box_warp', [1.0, 1.6])
def test_mirrored_label_renders_the_flipped_image(box_warp):
    torch.manual_seed(int(np.random.default_rng().integers(1 << 30)))
    planes = torch.randn(2, 3, 8, 24, 24)
    decoder = OSGDecoder(8, {'decoder_lr_mul': 1, 'decoder_output_dim': 8}, hidden_dim=16)
    with torch.no_grad():  # A denser field than at initialisation, so that the image has structure.
        decoder.net[2].bias[0] = 3.0
    labels = sample_camera_labels(np.random.default_rng(), 2, CameraDistribution())
    labels[:, 18] = np.random.default_rng().uniform(0.45, 0.55, 2)  # An off-centre principal point too.
    c = torch.from_numpy(labels.astype(np.float32))
    c_mirror = torch.from_numpy(mirror_camera_label(labels).astype(np.float32))
    options = dict(ray_start=2.25, ray_end=3.3, box_warp=box_warp, depth_resolution=12,
                   depth_resolution_importance=12, disparity_space_sampling=False, clamp_mode='softplus',
                   jitter=False)
    with torch.no_grad():
        image, depth = render(planes, decoder, c, 20, options)
        image_m, depth_m = render(flip_planes_along_x(planes), decoder, c_mirror, 20, options)
    assert image.std() > 1e-2  # Not a blank render.
    np.testing.assert_allclose(image_m.numpy(), image.flip(-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(depth_m.numpy(), depth.flip(-1).numpy(), atol=1e-5)
    # And the unmirrored label does not (the test can fail).
    with torch.no_grad():
        wrong, _ = render(flip_planes_along_x(planes), decoder, c, 20, options)
    assert (wrong - image.flip(-1)).abs().max() > 1e-2
