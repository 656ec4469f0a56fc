"""gen_samples.py on tiny models: upstream's file names, the three views against direct renders with
upstream's cameras, depth images, shapes of an analytic generator, snapshot kinds and bad files."""

import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import gen_samples
import legacy
from camera_utils import FOV_to_intrinsics, LookAtPoseSampler
from tests.generators import Ellipsoid, ellipsoid_G, read_ply, save_tiny_snapshot, tiny_G
from training import training_state


def _run(args):
    result = CliRunner().invoke(gen_samples.generate_images, args, catch_exceptions=False)
    return result.exit_code, result.output


def _quiet(*args):
    pass


def _label(pose, fov):
    return torch.cat([pose.reshape(1, 16), FOV_to_intrinsics(fov).reshape(1, 9)], dim=1)


def _direct_render(G, seed, psi, cutoff, fov):
    """Upstream's gen_samples views computed here from the camera utilities directly: conditioning
    frontal, renders at yaw pi/2 + (0.4, 0, -0.4), pitch pi/2 - 0.2, pivot and radius from rendering_kwargs."""
    pivot, radius = torch.tensor(G.rendering_kwargs['avg_camera_pivot']), G.rendering_kwargs['avg_camera_radius']
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    c_cond = _label(LookAtPoseSampler.sample(math.pi / 2, math.pi / 2, pivot, radius=radius), fov)
    with torch.no_grad():
        ws = G.mapping(z, c_cond, truncation_psi=psi, truncation_cutoff=cutoff)
        views = [G.synthesis(ws, _label(LookAtPoseSampler.sample(math.pi / 2 + yaw, math.pi / 2 - 0.2, pivot,
                                                                 radius=radius), fov))
                 for yaw in (0.4, 0, -0.4)]
    image = torch.cat([v['image'][0] for v in views], dim=2)
    return (image.permute(1, 2, 0) * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy(), views


def test_cli_writes_upstream_names_and_views(tmp_path):
    """No jitter, so the renders are deterministic and comparable with direct ones."""
    G = save_tiny_snapshot(tmp_path / 'net.pkl', tiny_G(jitter=False))
    out = tmp_path / 'out'
    code, log = _run(['--network', str(tmp_path / 'net.pkl'), '--seeds', '3,5-6', '--outdir', str(out),
                      '--trunc', '0.7', '--trunc-cutoff', '2'])
    assert code == 0, log
    assert sorted(os.listdir(out)) == ['seed0003.png', 'seed0003_depth.png', 'seed0005.png', 'seed0005_depth.png',
                                       'seed0006.png', 'seed0006_depth.png']
    for seed in (3, 6):
        expected, views = _direct_render(G, seed, 0.7, 2, 18.837)
        image = np.array(PIL.Image.open(out / f'seed{seed:04d}.png'))
        assert image.shape == (32, 96, 3)
        assert np.abs(image.astype(int) - expected).max() <= 1
        depth = np.array(PIL.Image.open(out / f'seed{seed:04d}_depth.png'))
        assert depth.shape == (16, 48)                             # Three views at the neural resolution.
        d = -torch.cat([v['image_depth'][0, 0] for v in views], dim=1).numpy()
        expected_depth = np.clip((d - d.min()) / (d.max() - d.min()) * 255 + 0.5, 0, 255)  # Near is bright.
        assert np.abs(depth - expected_depth).max() <= 1
    # The comparison sees the FOV: upstream's truncated 18 degrees differs beyond the tolerance above.
    other, _ = _direct_render(G, 3, 0.7, 2, 18)
    assert np.abs(np.array(PIL.Image.open(out / 'seed0003.png')).astype(int) - other).max() > 1


def test_cli_fov_and_depth_options(tmp_path):
    G = save_tiny_snapshot(tmp_path / 'net.pkl', tiny_G(jitter=False))
    code, log = _run(['--network', str(tmp_path / 'net.pkl'), '--seeds', '1', '--outdir', str(tmp_path / 'o'),
                      '--fov-deg', '30.5', '--depth', 'False'])
    assert code == 0, log
    assert os.listdir(tmp_path / 'o') == ['seed0001.png']
    expected, _ = _direct_render(G, 1, 1, 14, 30.5)
    assert np.abs(np.array(PIL.Image.open(tmp_path / 'o' / 'seed0001.png')).astype(int) - expected).max() <= 1


def test_training_state_and_rerun_reproducible(tmp_path):
    """A training state loads as a network; the jittered renderer is seeded by the seed."""
    save_tiny_snapshot(tmp_path / 'net.pkl')
    data = legacy.load_network_pkl(str(tmp_path / 'net.pkl'))
    path = tmp_path / training_state.state_file_name(0)
    training_state.save(str(path), G=data['G'], D=data['D'], G_ema=data['G_ema'], augment_pipe=None,
                        training_set_kwargs={}, optimizers={}, loop={'cur_nimg': 0}, rank_states=[])
    images = []
    for run in range(2):
        code, log = _run(['--network', str(path), '--seeds', '2', '--outdir', str(tmp_path / f'o{run}')])
        assert code == 0, log
        images.append(np.array(PIL.Image.open(tmp_path / f'o{run}' / 'seed0002.png')))
    np.testing.assert_array_equal(images[0], images[1])


def test_bad_inputs_give_one_line_errors(tmp_path):
    bad = tmp_path / 'bad.pkl'
    bad.write_bytes(b'not a snapshot at all')
    res = CliRunner().invoke(gen_samples.generate_images, ['--network', str(bad), '--seeds', '0',
                                                           '--outdir', str(tmp_path / 'o')])
    assert res.exit_code == 1 and 'Traceback' not in res.output
    assert f'gen_samples.py: {bad}: not a network snapshot' in res.output
    assert not (tmp_path / 'o').exists()
    res = CliRunner().invoke(gen_samples.generate_images, ['--network', str(tmp_path / 'missing.pkl'), '--seeds', '0',
                                                           '--outdir', str(tmp_path / 'o')])
    assert res.exit_code == 1 and 'missing.pkl: no such file' in res.output
    for args, message in [(['--seeds', '0-x'], "'0-x' is not a number"), (['--seeds', '0', '--class', '1'], '--class'),
                          (['--seeds', '0', '--shape-colors', 'True'], 'needs --shape-format=.ply')]:
        res = CliRunner().invoke(gen_samples.generate_images, ['--network', str(bad), '--outdir', 'o', *args])
        assert res.exit_code == 2 and message in res.output, res.output

# ----------------------------------------------------------------------------
# Shapes through generate_samples (the stand-in generator cannot be saved: it is called directly).


def test_shapes_of_an_ellipsoid_generator(tmp_path):
    ell = Ellipsoid()
    G = ellipsoid_G(ell)
    n = 40
    vs = 1.0 / (n - 1)
    written = gen_samples.generate_samples(G, [4, 9], str(tmp_path), depth=False, shape_only_first=True, log=_quiet,
                                           shape_kwargs=dict(resolution=n, fmt='.ply', units='voxel', colors=True))
    assert [os.path.basename(p) for p in written] == ['seed0004.png', 'seed0004.ply', 'seed0009.png']
    assert not [p for p in os.listdir(tmp_path) if p.startswith('.')]    # No temporary files left.
    ply = read_ply(tmp_path / 'seed0004.ply')
    u, v, w = (ply['vertex'][k].astype(np.float64) for k in 'xyz')
    world = np.stack([0.5 - w * vs, -0.5 + v * vs, -0.5 + u * vs], 1)   # Upstream's voxel frame, documented.
    d = ell.distance(world)
    assert len(d) > 300 and d.mean() < vs, d.mean() / vs
    colors = np.stack([ply['vertex'][k] for k in ('red', 'green', 'blue')], 1).astype(np.int64)
    assert np.abs(colors - np.round(255 * ell.rgb(world))).max() <= 1
    # .mrc: the raw density, world x reversed on axis 0, borders at -1000.
    gen_samples.generate_samples(G, [4], str(tmp_path / 'mrc'), depth=False, log=_quiet,
                                 shape_kwargs=dict(resolution=n, fmt='.mrc'))
    mrcfile = pytest.importorskip('mrcfile')
    with mrcfile.open(str(tmp_path / 'mrc' / 'seed0004.mrc')) as mrc:
        a = np.array(mrc.data)
    pad = int(30 * n / 256)
    i, j, k = np.meshgrid(*[np.arange(pad, n - pad)] * 3, indexing='ij')
    pts = np.stack([0.5 - i * vs, -0.5 + j * vs, -0.5 + k * vs], -1).reshape(-1, 3)
    inner = a[pad:n - pad, pad:n - pad, pad:n - pad].ravel()
    np.testing.assert_allclose(inner, ell.sigma(pts), atol=1e-3)
    assert a[:pad].max() == a[:, :, n - pad:].max() == -1000


def test_official_pickle(fixtures_dir, tmp_path):
    """The official fixture pickle (its module sources raise if executed) renders through the CLI."""
    code, log = _run(['--network', str(fixtures_dir / 'official-small-s1.pkl'), '--seeds', '0',
                      '--outdir', str(tmp_path)])
    assert code == 0, log
    image = np.array(PIL.Image.open(tmp_path / 'seed0000.png'))
    assert image.shape[1] == 3 * image.shape[0] and image.std() > 5
