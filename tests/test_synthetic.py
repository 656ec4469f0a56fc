"""The procedural 3D dataset: geometry against closed forms, camera labels, determinism, mirroring."""

import numpy as np
import pytest

from training import synthetic as syn
from training.dataset import DatasetError, camera_label_problems, mirror_camera_label


def pinhole_pixel(c: np.ndarray, point: np.ndarray, res: int) -> np.ndarray:
    """(column, row) in pixel-index units of a world point: u = fx x/z + cx, pixel centres at (j + 0.5)/R."""
    pose, k = c[:16].reshape(4, 4), c[16:].reshape(3, 3)
    x, y, z = (np.linalg.inv(pose) @ np.append(point, 1.0))[:3]
    u, v = k[0, 0] * x / z + k[0, 2], k[1, 1] * y / z + k[1, 2]
    return np.array([u * res - 0.5, v * res - 0.5])


def coverage_centroid(alpha: np.ndarray) -> np.ndarray:
    rows, cols = np.mgrid[:alpha.shape[0], :alpha.shape[1]]
    return np.array([(alpha * cols).sum(), (alpha * rows).sum()]) / alpha.sum()


def test_sphere_centre_projects_to_rendered_centroid():
    rng = np.random.default_rng(0)
    cams = syn.sample_camera_labels(rng, 4, syn.CameraDistribution(yaw_std=0.4, pitch_std=0.3, pivot=(0, 0, 0.1)))
    for c in cams:
        centre = rng.uniform(-0.15, 0.15, size=3)
        radius = rng.uniform(0.05, 0.09)
        scene = syn.Scene([syn.Primitive('ellipsoid', centre, np.full(3, radius), np.array([0.8, 0.5, 0.2]))])
        _rgb, alpha = syn.render_scene(scene, c, 64, ssaa=4)
        # A sphere off the optical axis images to an ellipse whose centre is offset from the projected
        # centre by ~ f * angle * (angular radius)^2 ~ 1e-3 px here; the supersampled coverage adds less.
        np.testing.assert_allclose(coverage_centroid(alpha), pinhole_pixel(c, centre, 64), atol=0.03)
        # Projected area ~ pi (f R r / d)^2 pixels.
        dist = np.linalg.norm(centre - c[[3, 7, 11]])
        np.testing.assert_allclose(alpha.sum(), np.pi * (c[16] * 64 * radius / dist) ** 2, rtol=0.03)


def test_hit_distances_match_closed_forms():
    origin = np.array([0.0, 0.0, 2.7])
    colour = np.ones(3)
    # Sphere: the ray toward its centre hits at |c - o| - r.
    centre = np.array([0.1, -0.05, 0.2])
    d = (centre - origin) / np.linalg.norm(centre - origin)
    t, n, _ = syn.cast_rays(syn.Scene([syn.Primitive('ellipsoid', centre, np.full(3, 0.1), colour)]), origin, d[None])
    np.testing.assert_allclose(t, np.linalg.norm(centre - origin) - 0.1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(n[0], -d, atol=1e-12)
    # Box (rotated 90 degrees about y, so half-extent x faces the camera): hits at 2.7 - h_x.
    box = syn.Primitive('box', np.zeros(3), np.array([0.2, 0.1, 0.15]), colour, syn._rotation(1, np.pi / 2))
    t, n, _ = syn.cast_rays(syn.Scene([box]), origin, np.array([[0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(t, 2.7 - 0.2, atol=1e-12)
    np.testing.assert_allclose(n[0], [0, 0, 1], atol=1e-12)
    # Torus round y (major R, minor r): the ray x = R, y = 0 along -z meets the tube at z = sqrt(2Rr + r^2).
    big, small = 0.15, 0.05
    torus = syn.Primitive('torus', np.zeros(3), np.array([big, small, 0]), colour)
    t, _, _ = syn.cast_rays(syn.Scene([torus]), np.array([big, 0, 2.7]), np.array([[0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(t, 2.7 - np.sqrt(2 * big * small + small ** 2), atol=2e-6)
    # A ray through the hole misses.
    t, _, _ = syn.cast_rays(syn.Scene([torus]), np.array([0, 0.3, 0]), np.array([[0.0, -1.0, 0.0]]))
    assert np.isinf(t[0])


def test_camera_labels_follow_eg3d_convention():
    # Frontal camera (yaw = pitch = pi/2): x_cam = +x, y_cam = -y, z_cam = -z, centre (0, 0, 2.7).
    frontal = syn.sample_camera_labels(np.random.default_rng(0), 1, syn.CameraDistribution(yaw_std=0, pitch_std=0))[0]
    np.testing.assert_allclose(frontal[:16], [1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 2.7, 0, 0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(frontal[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=0)
    # The facts' worked example of EG3D's orbit parametrisation.
    np.testing.assert_allclose(syn.orbit_origin(np.pi / 2 + 0.4, np.pi / 2 - 0.2, 2.7), [1.0429, 0.3438, 2.4666],
                               atol=1e-4)

    dist = syn.CameraDistribution(pivot=(0, 0, 0.2))
    cams = syn.sample_camera_labels(np.random.default_rng(1), 200, dist)
    for c in cams:
        assert camera_label_problems(c, atol=1e-12) == []
        rot, centre = c[:16].reshape(4, 4)[:3, :3], c[[3, 7, 11]]
        np.testing.assert_allclose(rot.T @ rot, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(centre), 2.7, atol=1e-12)
        aim = (np.array(dist.pivot) - centre) / np.linalg.norm(np.array(dist.pivot) - centre)
        np.testing.assert_allclose(rot[:, 2], aim, atol=1e-12)          # Looks at the pivot,
        assert abs(rot[1, 0]) < 1e-12 and rot[1, 1] < 0                 # no roll, image down = world down.
    full = syn.sample_camera_labels(np.random.default_rng(2), 200, syn.CameraDistribution(full_360=True))
    assert (full[:, 11] < -1).any() and (full[:, 11] > 1).any()          # Cameras behind and in front.


@pytest.mark.parametrize('kind', syn.KINDS)
def test_mirrored_scene_from_mirrored_label_is_the_flipped_image(kind):
    rng = np.random.default_rng(3)
    scene = syn.make_scene(kind, rng)
    c = syn.sample_camera_labels(rng, 1, syn.CameraDistribution(yaw_std=0.5, pitch_std=0.3))[0]
    rgb, alpha = syn.render_scene(scene, c, 24)
    rgb_m, alpha_m = syn.render_scene(syn.mirror_scene(scene), mirror_camera_label(c), 24)
    assert alpha.sum() > 20
    np.testing.assert_allclose(rgb_m, rgb[:, ::-1], atol=1e-5)
    np.testing.assert_allclose(alpha_m, alpha[:, ::-1], atol=1e-12)


@pytest.mark.parametrize('kind', syn.KINDS)
def test_objects_are_centred_inside_the_eg3d_box_on_black(kind):
    rng = np.random.default_rng(4)
    for _ in range(30):  # Inside the part of [-0.5, 0.5]^3 that EG3D's ray range [2.25, 3.3] covers.
        for prim in syn.make_scene(kind, rng).primitives:
            assert np.linalg.norm(prim.center) + syn._bounding_radius(prim) < 0.45
    frontal = syn.sample_camera_labels(rng, 1, syn.CameraDistribution(yaw_std=0, pitch_std=0))[0]
    rgb, alpha = syn.render_scene(syn.make_scene(kind, rng), frontal, 32)
    assert np.all(rgb[[0, 0, -1, -1], [0, -1, 0, -1]] == 0)               # Black background.
    assert 0.1 < alpha.mean() < 0.7
    np.testing.assert_allclose(coverage_centroid(alpha), [15.5, 15.5], atol=3)


def test_items_are_deterministic_and_the_dataset_serves_them():
    a_img, a_c = syn.render_item('heads', 7, 5, 16)
    b_img, b_c = syn.render_item('heads', 7, 5, 16)
    assert a_img.tobytes() == b_img.tobytes() and a_c.tobytes() == b_c.tobytes()
    assert syn.render_item('heads', 7, 6, 16)[0].tobytes() != a_img.tobytes()
    assert syn.render_item('heads', 8, 5, 16)[0].tobytes() != a_img.tobytes()

    ds = syn.SyntheticDataset('synthetic:heads', resolution=16, num_images=8, seed=7, use_labels=True, xflip=True)
    assert (len(ds), ds.resolution, ds.label_dim, ds.name) == (16, 16, 25, 'synthetic-heads')
    img, c = ds[5]
    np.testing.assert_array_equal(img, a_img.transpose(2, 0, 1))
    np.testing.assert_array_equal(c, a_c.astype(np.float32))
    img_f, c_f = ds[8 + 5]
    np.testing.assert_array_equal(img_f, img[:, :, ::-1])
    np.testing.assert_array_equal(c_f, mirror_camera_label(c))


def test_parse_source():
    assert syn.parse_source('synthetic') == 'box' and syn.parse_source('synthetic:heads') == 'heads'
    assert syn.parse_source('data/ffhq.zip') is None
    with pytest.raises(DatasetError, match='unknown synthetic kind "cats"'):
        syn.parse_source('synthetic:cats')
    with pytest.raises(DatasetError, match='power of two'):
        syn.SyntheticDataset('synthetic:box', resolution=48)
