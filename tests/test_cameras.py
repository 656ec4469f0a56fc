"""Cameras: pose samplers, cam2world construction and intrinsics, against closed forms, the worked
example of eg3d-facts.md section 4 and the official fixture's camera labels."""

import json
import math

import numpy as np
import pytest
import torch

import camera_utils
from camera_utils import (FOV_to_intrinsics, GaussianCameraPoseSampler, LookAtPoseSampler, UniformCameraPoseSampler,
                          create_cam2world_matrix, make_camera_label, split_camera_label)


def orbit_reference(h, v, r):
    """Independent float64 closed form of the orbit (facts section 4)."""
    h, v = np.asarray(h, np.float64), np.clip(np.asarray(v, np.float64), 1e-5, np.pi - 1e-5)
    phi = np.arccos(1 - 2 * v / np.pi)
    return np.stack([-r * np.sin(phi) * np.cos(h), r * np.cos(phi), r * np.sin(phi) * np.sin(h)], axis=-1)


def check_rotation(pose):
    """Orthonormal, right-handed rotation and a homogeneous last row."""
    rot = pose[:, :3, :3].double()
    eye = torch.eye(3, dtype=torch.float64).expand_as(rot)
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(rot.shape[0], dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(pose[:, 3].double(), torch.tensor([0., 0., 0., 1.], dtype=torch.float64).expand(pose.shape[0], 4), atol=0, rtol=0)


def test_lookat_worked_example():
    pivot = torch.tensor([0.0, 0.0, 0.2])
    pose = LookAtPoseSampler.sample(math.pi / 2 + 0.4, math.pi / 2 - 0.2, pivot, radius=2.7)
    assert pose.shape == (1, 4, 4)
    origin = pose[0, :3, 3]
    torch.testing.assert_close(origin, torch.tensor([1.0429, 0.3438, 2.4666]), atol=1e-4, rtol=0)
    # The camera's forward axis (third column, OpenCV z) points at the pivot ...
    to_pivot = (pivot - origin).double()
    torch.testing.assert_close(pose[0, :3, 2].double(), to_pivot / to_pivot.norm(), atol=1e-6, rtol=0)
    # ... its x axis is horizontal (world up is (0, 1, 0)) and its y axis points down in the world.
    assert abs(pose[0, 1, 0].item()) < 1e-6 and pose[0, 1, 1].item() < 0
    check_rotation(pose)
    # The orbit is centred on the world origin, not on the pivot.
    assert abs(origin.norm().item() - 2.7) < 1e-5


def test_frontal_camera_axes():
    pose = LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, torch.zeros(3), radius=2.7)[0]
    torch.testing.assert_close(pose[:3, 3], torch.tensor([0.0, 0.0, 2.7]), atol=1e-6, rtol=0)
    # x_cam = +x_world (image right), y_cam = -y_world (image down), z_cam = -z_world (forward).
    torch.testing.assert_close(pose[:3, :3], torch.diag(torch.tensor([1.0, -1.0, -1.0])), atol=1e-6, rtol=0)


@pytest.mark.parametrize('sampler', ['gaussian', 'lookat'])
def test_orbit_positions_and_draw_order(sampler):
    # Random yaw / pitch from the global generator: h first, then v, each randn([N, 1]) * std + mean.
    h_mean, v_mean, h_std, v_std, radius, n = 1.3, 1.7, 0.3, 0.4, 1.9, 64
    torch.manual_seed(7)
    if sampler == 'gaussian':
        poses = GaussianCameraPoseSampler.sample(h_mean, v_mean, h_std, v_std, radius=radius, batch_size=n)
        lookat = np.zeros(3)
    else:
        lookat = np.array([0.1, -0.2, 0.3])
        poses = LookAtPoseSampler.sample(h_mean, v_mean, torch.tensor(lookat, dtype=torch.float32), h_std, v_std,
                                         radius=radius, batch_size=n)
    torch.manual_seed(7)
    h = (torch.randn(n, 1) * h_std + h_mean).double().numpy()[:, 0]
    v = (torch.randn(n, 1) * v_std + v_mean).double().numpy()[:, 0]
    origins = orbit_reference(h, v, radius)
    np.testing.assert_allclose(poses[:, :3, 3].numpy(), origins, atol=2e-6)
    forward = lookat - origins
    np.testing.assert_allclose(poses[:, :3, 2].numpy(), forward / np.linalg.norm(forward, axis=1, keepdims=True),
                               atol=2e-6)
    check_rotation(poses)


def test_orbit_directions_and_pitch_mapping():
    def origin(h, v):
        return LookAtPoseSampler.sample(h, v, [0, 0, 0], radius=2.0)[0, :3, 3]
    # Larger yaw moves the camera toward +x; a smaller pitch moves it up (+y).
    assert origin(math.pi / 2 + 0.3, math.pi / 2)[0] > 0.5
    assert origin(math.pi / 2, math.pi / 2 - 0.3)[1] > 0.3
    # Pitch is not an angle: the elevation for v = pi/2 - dv is asin(2 dv / pi), about 0.637 dv.
    dv = 0.05
    elevation = math.asin(origin(math.pi / 2, math.pi / 2 - dv)[1].item() / 2.0)
    assert abs(elevation - math.asin(2 * dv / math.pi)) < 1e-5
    # v is clamped away from the poles, so the pose stays finite there.
    assert torch.isfinite(LookAtPoseSampler.sample(0.0, 0.0, [0, 0, 0])).all()


def test_uniform_sampler_range_and_draws():
    torch.manual_seed(3)
    poses = UniformCameraPoseSampler.sample(math.pi / 2, math.pi / 2, 0.5, 0.25, radius=1.5, batch_size=128)
    torch.manual_seed(3)
    h = ((torch.rand(128, 1) * 2 - 1) * 0.5 + math.pi / 2).double().numpy()[:, 0]
    v = ((torch.rand(128, 1) * 2 - 1) * 0.25 + math.pi / 2).double().numpy()[:, 0]
    assert np.abs(h - math.pi / 2).max() <= 0.5 and np.abs(v - math.pi / 2).max() <= 0.25
    np.testing.assert_allclose(poses[:, :3, 3].numpy(), orbit_reference(h, v, 1.5), atol=2e-6)
    # Looking at the world origin.
    origins = poses[:, :3, 3].double()
    torch.testing.assert_close(poses[:, :3, 2].double(), -origins / origins.norm(dim=1, keepdim=True), atol=2e-6, rtol=0)


def test_samplers_draw_even_without_spread():
    # Upstream draws its two normals even with zero spread; scripts' random streams depend on it.
    torch.manual_seed(11)
    LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, [0, 0, 0], batch_size=3)
    after = torch.rand(1)
    torch.manual_seed(11)
    torch.randn(3, 1), torch.randn(3, 1)
    assert torch.equal(after, torch.rand(1))


def test_create_cam2world_matrix_closed_form():
    gen = torch.Generator().manual_seed(0)
    origin = torch.randn(16, 3, generator=gen, dtype=torch.float64) * 3
    forward = torch.randn(16, 3, generator=gen, dtype=torch.float64)
    pose = create_cam2world_matrix(forward, origin)
    f = forward / forward.norm(dim=1, keepdim=True)
    right = np.cross(f.numpy(), np.array([0.0, 1.0, 0.0]))          # -(up x f) = f x up
    right /= np.linalg.norm(right, axis=1, keepdims=True)
    np.testing.assert_allclose(pose[:, :3, 0].numpy(), right, atol=1e-12)
    np.testing.assert_allclose(pose[:, :3, 1].numpy(), np.cross(f.numpy(), right), atol=1e-12)
    np.testing.assert_allclose(pose[:, :3, 2].numpy(), f.numpy(), atol=1e-12)
    np.testing.assert_allclose(pose[:, :3, 3].numpy(), origin.numpy(), atol=0)
    check_rotation(pose)
    with pytest.raises(ValueError, match='forward_vector'):
        create_cam2world_matrix(forward[:, :2], origin)


def test_fov_to_intrinsics():
    for fov, focal in [(18.837, 4.2634), (18.0, 4.4652), (45.0, 1.7074)]:
        k = FOV_to_intrinsics(fov)
        assert abs(k[0, 0].item() - focal) < 1e-4 and abs(k[1, 1].item() - focal) < 1e-4
        np.testing.assert_array_equal(k[:, 2].numpy(), [0.5, 0.5, 1.0])
        assert k[0, 1] == 0 and k[1, 0] == 0 and k[2, 0] == 0 and k[2, 1] == 0
    # The 1.414 factor: the true horizontal FOV is 2 atan(0.5 / focal), not the argument.
    true_fov = 2 * math.degrees(math.atan(0.5 / FOV_to_intrinsics(18.837)[0, 0].item()))
    assert abs(true_fov - 13.37) < 0.01
    assert abs(2 * math.degrees(math.atan(0.5 / FOV_to_intrinsics(45.0)[0, 0].item())) - 32.64) < 0.01


def test_camera_label_round_trip_and_errors():
    poses = LookAtPoseSampler.sample(1.4, 1.6, [0, 0, 0.2], 0.1, 0.1, radius=2.7, batch_size=5)
    c = make_camera_label(poses, FOV_to_intrinsics(18.837))
    assert c.shape == (5, 25)
    np.testing.assert_array_equal(c[:, :16].numpy(), poses.reshape(5, 16).numpy())
    np.testing.assert_array_equal(c[0, 16:].numpy(), FOV_to_intrinsics(18.837).reshape(9).numpy())
    cam2world, intrinsics = split_camera_label(c)
    assert torch.equal(cam2world, poses) and torch.equal(intrinsics[2], FOV_to_intrinsics(18.837))
    with pytest.raises(AssertionError, match='camera label'):
        split_camera_label(torch.zeros(5, 26))
    with pytest.raises(AssertionError, match='intrinsics'):
        make_camera_label(poses, torch.zeros(4, 3, 3))
    assert set(camera_utils.__all__) >= {'GaussianCameraPoseSampler', 'LookAtPoseSampler', 'UniformCameraPoseSampler',
                                         'create_cam2world_matrix', 'FOV_to_intrinsics'}


def test_fixture_camera_labels(fixtures_dir):
    # The official run built its render cameras with LookAtPoseSampler and FOV_to_intrinsics.
    data = np.load(fixtures_dir / 'official-small-s1.npz')
    cams = json.loads(str(data['meta_json']))['cameras']
    pivot = torch.tensor(cams['pivot'])
    poses = torch.cat([LookAtPoseSampler.sample(math.pi / 2 + dh, math.pi / 2 + dv, pivot, radius=cams['radius'])
                       for dh, dv in cams['offsets_yaw_pitch']])
    c = make_camera_label(poses, FOV_to_intrinsics(cams['fov_deg']))
    np.testing.assert_allclose(c.numpy(), data['in/c_render'], atol=1e-6, rtol=0)
    np.testing.assert_allclose(c[:1].expand(4, -1).numpy(), data['in/c_cond'], atol=1e-6, rtol=0)
