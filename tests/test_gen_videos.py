"""gen_videos.py on tiny models: frame counts read back from the mp4, backbone passes (plane caching),
the latent path, the camera path and the dolly-zoom image modes against closed forms."""

import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import gen_videos
from tests.generators import Ellipsoid, ellipsoid_G, read_ply, save_tiny_snapshot, tiny_G
from training import video

imageio = pytest.importorskip('imageio')


def _frames(path):
    reader = imageio.get_reader(str(path))
    try:
        frames = [np.asarray(f) for f in reader]
    finally:
        reader.close()
    return frames


def _count_backbone(G):
    calls = []
    G.backbone.synthesis.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_cli_interpolation_frame_count_and_grid(tmp_path):
    save_tiny_snapshot(tmp_path / 'net.pkl')
    res = CliRunner().invoke(gen_videos.generate_videos, [
        '--network', str(tmp_path / 'net.pkl'), '--seeds', '0-3', '--grid', '2x1', '--w-frames', '3',
        '--outdir', str(tmp_path / 'out'), '--sample_mult', '1'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert os.listdir(tmp_path / 'out') == ['interpolation.mp4']    # No temporary file left.
    frames = _frames(tmp_path / 'out' / 'interpolation.mp4')
    assert len(frames) == 2 * 3                                     # 4 seeds / 2 cells = 2 keyframes x 3 frames.
    assert frames[0].shape == (32, 64, 3)
    assert np.abs(frames[0].astype(int) - frames[3].astype(int)).mean() > 1  # The latents and camera move.


def test_cli_per_seed_videos(tmp_path):
    save_tiny_snapshot(tmp_path / 'net.pkl')
    res = CliRunner().invoke(gen_videos.generate_videos, [
        '--network', str(tmp_path / 'net.pkl'), '--seeds', '5,7', '--interpolate', 'False', '--w-frames', '4',
        '--outdir', str(tmp_path / 'out'), '--image_mode', 'image_raw', '--nrr', '16'], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert sorted(os.listdir(tmp_path / 'out')) == ['5.mp4', '7.mp4']
    frames = _frames(tmp_path / 'out' / '5.mp4')
    assert len(frames) == 4 and frames[0].shape == (16, 16, 3)


def test_cli_errors(tmp_path):
    res = CliRunner().invoke(gen_videos.generate_videos, ['--network', str(tmp_path / 'no.pkl'), '--seeds', '0',
                                                          '--outdir', str(tmp_path / 'o')])
    assert res.exit_code == 1 and 'gen_videos.py: ' in res.output and 'no such file' in res.output
    save_tiny_snapshot(tmp_path / 'net.pkl')
    res = CliRunner().invoke(gen_videos.generate_videos, ['--network', str(tmp_path / 'net.pkl'), '--seeds', '0-2',
                                                          '--grid', '2x1', '--outdir', str(tmp_path / 'o')])
    assert res.exit_code == 1 and '3 seeds do not divide into a 2x1 grid' in res.output
    assert not (tmp_path / 'o' / 'interpolation.mp4').exists()
    res = CliRunner().invoke(gen_videos.generate_videos, ['--network', 'x', '--seeds', '0', '--grid', '2y1',
                                                          '--outdir', 'o'])
    assert res.exit_code == 2 and 'WxH' in res.output

# ----------------------------------------------------------------------------
# Plane caching.


def test_one_keyframe_runs_the_backbone_once(tmp_path):
    """A fixed latent on an orbiting camera: one backbone pass for the whole video, and the frames
    equal full (uncached) renders of the same cameras."""
    G = tiny_G(jitter=False)
    calls = _count_backbone(G)
    render = gen_videos.gen_interp_video(G, str(tmp_path / 'a.mp4'), [3], w_frames=5, progress=False)
    assert len(calls) == 1 and render.backbone_passes == 1
    assert len(_frames(tmp_path / 'a.mp4')) == 5
    # The cached planes give the uncached images (frame 2's camera, computed directly).
    ws = render.cache[(0, 0)][0]
    c = video.camera_label(G, *video.camera_angles(2, 5), video.CFG_FOCAL['FFHQ'], torch.device('cpu'))
    img, ran = render((0, 0), ws, c)
    assert not ran
    with torch.no_grad():
        ref = G.synthesis(ws, c, noise_mode='const')['image'][0]
    torch.testing.assert_close(img, ref, atol=1e-5, rtol=1e-5)


def test_interpolation_runs_the_backbone_per_frame_and_cell(tmp_path):
    G = tiny_G()
    calls = _count_backbone(G)
    gen_videos.gen_interp_video(G, str(tmp_path / 'b.mp4'), [1, 2, 3, 4], grid=(2, 1), w_frames=2, progress=False)
    assert len(calls) == 2 * 2 * 2                                  # cells x keyframes x w_frames


def test_latent_path_through_keyframes_and_periodic():
    ws = torch.randn(3, 4, 5, dtype=torch.float64)
    path = video.LatentPath(ws, w_frames=7)
    for k in range(3):
        torch.testing.assert_close(path(7 * k)[0], ws[k])
    torch.testing.assert_close(path(21)[0], ws[0])                  # One loop over K keyframes.
    # Between keyframes the loop closes up to the spline's end effects (upstream's 2 wraps keep them small).
    torch.testing.assert_close(path(0.5)[0], path(21.5)[0], atol=3e-3, rtol=0)
    assert (path(0.5)[0] - ws[0]).abs().max() > 1e-2
    single = video.LatentPath(ws[:1], w_frames=7)
    assert all(torch.equal(single(f), ws[:1]) for f in (0, 3, 6))


def test_keyframe_seeds():
    s = video.keyframe_seeds([10, 11, 12], (2, 1), num_keyframes=2)
    np.testing.assert_array_equal(s, [[[10, 11], [12, 10]]])        # Each cell takes K consecutive seeds.
    assert sorted(video.keyframe_seeds(list(range(8)), (2, 2), shuffle_seed=1).ravel()) == list(range(8))
    with pytest.raises(video.VideoOptionsError):
        video.keyframe_seeds([1, 2, 3], (2, 1))

# ----------------------------------------------------------------------------
# Cameras.


def test_camera_path_is_one_orbit():
    """Frame 0 looks from above the frontal view (pitch 3.14/2 - 0.05 + 0.25); frame F/4 is turned by
    the full yaw amplitude 0.35 at the middle pitch; the path closes after F frames."""
    h0, v0 = video.camera_angles(0, 40)
    assert (h0, v0) == pytest.approx((1.57, 1.57 - 0.05 + 0.25))
    h1, v1 = video.camera_angles(10, 40)
    assert h1 == pytest.approx(1.57 + 0.35, abs=1e-5) and v1 == pytest.approx(1.52, abs=1e-3)
    assert video.camera_angles(40, 40) == pytest.approx(video.camera_angles(0, 40), abs=1e-2)  # 3.14, not pi.


@pytest.mark.parametrize('factor', [0.5, 2.0])
def test_dolly_keeps_the_pivot_plane(factor):
    """Pinhole projection (docs/camera_conventions.md) of points in the plane through the pivot,
    perpendicular to the optical axis, is unchanged by the dolly zoom; points off that plane move."""
    G = tiny_G()
    c = video.camera_label(G, 1.9, 1.4, 4.2647, torch.device('cpu')).double()
    pivot = torch.tensor(G.rendering_kwargs['avg_camera_pivot'], dtype=torch.float64)
    c2, shift = video.dolly(c, pivot, factor)

    def project(c, p):
        pose, K = c[0, :16].view(4, 4), c[0, 16:].view(3, 3)
        cam = torch.linalg.solve(pose, torch.cat([p, torch.ones(len(p), 1, dtype=p.dtype)], 1).T)[:3]
        uv = K @ (cam / cam[2])
        return uv[:2].T
    pose = c[0, :16].view(4, 4)
    right, down = pose[:3, 0], pose[:3, 1]
    rng = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 6, 1, generator=rng, dtype=torch.float64) - 0.5
    in_plane = pivot + 0.3 * a * right + 0.3 * b * down
    torch.testing.assert_close(project(c2, in_plane), project(c, in_plane))
    off_plane = in_plane + 0.2 * pose[:3, 2]
    assert (project(c2, off_plane) - project(c, off_plane)).abs().max() > 1e-3
    assert shift == pytest.approx((factor - 1) * float((pose[:3, 3] - pivot).norm()))


def test_image_modes(tmp_path):
    """near/far render the ellipsoid with the same size at the pivot plane; depth is in [-1, 1]."""
    G = ellipsoid_G(Ellipsoid(centre=(0, 0, 0.2), axes=(0.2, 0.2, 0.05)))
    G.rendering_kwargs.update(depth_resolution=24, depth_resolution_importance=0, jitter=False)
    c = video.camera_label(G, video.PI / 2, video.PI / 2, 4.2647, torch.device('cpu'))
    ws = torch.zeros(1, G.num_ws, G.w_dim)
    ray_start = G.rendering_kwargs['ray_start']
    raws = {}
    for mode in ('image_raw', 'image_near', 'image_far', 'image_depth'):
        G_mode = video.FrameRenderer(G, mode)
        img, _ = G_mode((0, 0), ws, c)
        raws[mode] = img
        assert G.rendering_kwargs['ray_start'] == ray_start             # Bounds restored.
    depth = raws['image_depth']
    assert depth.min() == -1 and depth.max() == 1
    # A flat disc at the pivot: the same silhouette from near and far (the SR output differs, so
    # compare the renders' coverage through the dollied cameras at the raw level).
    masks = {}
    for mode in ('image_near', 'image_far'):
        c2, shift = video.dolly(c, torch.tensor([0, 0, 0.2]), video.DOLLY[mode])
        with video.shifted_ray_bounds(G, shift), torch.no_grad():
            masks[mode] = G.synthesis(ws, c2)['image_raw'][0, 0] > -0.8   # Background: -1.
    assert (masks['image_near'] != masks['image_far']).float().mean() < 0.05
    assert 0.1 < masks['image_near'].float().mean() < 0.9


def test_video_shapes(tmp_path):
    G = ellipsoid_G()
    gen_videos.gen_interp_video(G, str(tmp_path / 'v.mp4'), [0], w_frames=3, gen_shapes=True, shape_res=32,
                                progress=False)
    assert sorted(os.listdir(tmp_path / 'v_shapes')) == ['0000_shape.ply']   # One latent, one shape.
    trajectory = np.load(tmp_path / 'v_trajectory.npy')
    assert trajectory.shape == (3, 25)
    assert np.linalg.norm(trajectory[:, [3, 7, 11]], axis=1) == pytest.approx([2.7] * 3, abs=1e-5)
    assert len(read_ply(tmp_path / 'v_shapes' / '0000_shape.ply')['vertex']) > 100
