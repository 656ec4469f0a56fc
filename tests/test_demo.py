"""demo.py end to end, shortened (slow): dataset, training, checks, samples, shape, video, summary; a rerun
reuses the dataset and writes a new run directory. Fast: the demo's helpers (shape level, .ply header,
sample grid)."""

import json
import os
import pathlib
import re
import subprocess
import sys

import imageio
import numpy as np
import PIL.Image
import pytest
import torch

from tests.generators import Ellipsoid, ellipsoid_G, read_ply
from training import demo

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Smaller networks than the tiny preset (same 32 px images), one kimg: a few minutes on 2 loaded cores.
SHRINK = ['z_dim=32', 'w_dim=32', 'cbase=512', 'cmax=32', 'triplane_resolution=16', 'triplane_channels=8',
          'decoder_hidden_dim=16', 'rendering.depth_resolution=8', 'rendering.depth_resolution_importance=8',
          'tick=0.25', 'image_grid=[2,2]']


def _run_demo(outdir, *extra):
    args = [sys.executable, 'demo.py', f'--outdir={outdir}', '--kimg=1', '--images=64', '--swd-images=32',
            *[f'--set={s}' for s in SHRINK], *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1200,
                          env=dict(os.environ, OMP_WAIT_POLICY='PASSIVE'))


@pytest.mark.slow
def test_shortened_demo_end_to_end(tmp_path):
    outdir = tmp_path / 'demo'
    res = _run_demo(outdir)
    out = res.stdout
    # Exit code 0 when every check passed, 1 when a learning check failed; never a crash (2) or traceback.
    assert res.returncode in (0, 1), res.stdout[-3000:] + res.stderr[-3000:]
    assert 'Traceback' not in res.stderr
    assert ('[demo] all checks passed' in out) == (res.returncode == 0)
    for line in ['SWD first snapshot (kimg 0)', 'SWD last snapshot', 'SWD mean-image baseline',
                 'reprojection error, rendered depth', 'reprojection error, flat plane at mean depth']:
        assert re.search(re.escape(line) + r'\s+\d+\.\d+', out), line
    verdicts = re.findall(r'^\s+(PASS|FAIL)\s+(.*?):', out, flags=re.M)
    assert [name for _, name in verdicts] == ['SWD(last) <= 0.7 x SWD(first)', 'SWD(last) < SWD(mean image)',
                                              'reprojection, rendered depth < flat plane', 'shape is not empty']
    assert re.search(r'tick 1\s+kimg 0\.\d', out), 'training progress (tick lines) is shown'

    # Every printed output exists; the summary agrees with the printed verdicts.
    printed = dict(re.findall(r'^  (\w+)\s+(\S+)$', out.split('[demo] outputs:')[1], flags=re.M))
    assert set(printed) == {'dataset', 'snapshot', 'samples', 'samples_dir', 'shape', 'video', 'orbit', 'summary'}
    for path in printed.values():
        assert os.path.exists(os.path.join(ROOT, path)), path
    summary = json.loads(pathlib.Path(ROOT, printed['summary']).read_text())
    assert summary['kimg'] == 1 and summary['first_snapshot'].endswith('network-snapshot-000000.pkl')
    assert [summary['checks'][name] for _, name in verdicts] == [v == 'PASS' for v, _ in verdicts]
    swd = summary['swd']
    assert all(np.isfinite(v) and v > 0 for v in swd.values())
    assert summary['checks']['SWD(last) <= 0.7 x SWD(first)'] == (swd['last'] <= 0.7 * swd['first'])

    # The files: a non-empty mesh, a video of 120 frames at 32 px, the sample grid and the orbit strip.
    ply = read_ply(os.path.join(ROOT, printed['shape']))
    assert len(ply['vertex']) == summary['shape_vertices'] > 0 and len(ply['faces']) > 0
    reader = imageio.get_reader(os.path.join(ROOT, printed['video']))  # ffmpeg (imageio-ffmpeg).
    try:
        frames = np.stack([np.asarray(f) for f in reader])
    finally:
        reader.close()
    assert frames.shape == (120, 32, 32, 3)
    grid = np.asarray(PIL.Image.open(os.path.join(ROOT, printed['samples'])))
    assert grid.shape == (4 * 32 + 3 * 2, 2 * 96 + 2, 3)
    strip = np.asarray(PIL.Image.open(os.path.join(ROOT, printed['orbit'])))
    assert strip.shape == (64, 8 * 32, 3) and strip[:32].std() > 1

    # A rerun reuses the dataset and writes a new run directory beside the first.
    again = _run_demo(outdir)
    assert again.returncode in (0, 1), again.stdout[-3000:] + again.stderr[-3000:]
    assert 'dataset: reusing' in again.stdout
    runs = sorted(p.name for p in (outdir / 'runs').iterdir())
    assert len(runs) == 2 and runs[0].startswith('00000-') and runs[1].startswith('00001-')


def test_run_command_wall_time_cap_waits_for_the_start_line():
    # A child that ignores nothing: SIGTERM before 'tick 0' would kill it (exit -15); after, its handler
    # stops it cleanly. The deadline has passed from the start, so the signal goes out right after 'tick 0'.
    script = (
        'import signal, sys, time\n'
        'signal.signal(signal.SIGTERM, lambda *a: (print("stopped cleanly", flush=True), sys.exit(0)))\n'
        'time.sleep(1.0)\n'
        'print("tick 0 ", flush=True)\n'
        'time.sleep(30)\n'
        'print("not stopped", flush=True)\n')
    logged = []
    lines = demo.run_command(['-c', script], 'child', log=logged.append, deadline=0,
                             started=re.compile(r'tick 0 '))
    assert lines == ['tick 0 ', 'stopped cleanly']
    assert any('wall-time cap reached' in str(line) for line in logged)
    with pytest.raises(demo.DemoError, match=r'child failed \(exit code 3\)'):
        demo.run_command(['-c', 'import sys; print("boom"); sys.exit(3)'], 'child', log=logged.append)


def test_choose_shape_level_finds_a_surface(tmp_path):
    G = ellipsoid_G(Ellipsoid(level=10.0, gain=40.0))
    assert demo.choose_shape_level(G, seed=0) == 10.0        # Upstream's level cuts this density well.
    faint = ellipsoid_G(Ellipsoid(level=0.5, gain=2.0))       # Density never reaches 10: an empty mesh there.
    level = demo.choose_shape_level(faint, seed=0)
    assert 0.5 < level < 2.5
    from training import shapes
    ws = torch.zeros([1, faint.backbone.num_ws, faint.w_dim])
    for lvl, nonempty in [(10.0, False), (level, True)]:
        summary = shapes.save_shape(str(tmp_path / f'{lvl:g}.ply'), shapes.DensityField(faint, ws), 32, fmt='.ply',
                                    level=lvl)
        assert (summary['vertices'] > 0) == nonempty, (lvl, summary)


def test_ply_vertex_count_and_sample_grid(tmp_path):
    from training import shapes
    path = tmp_path / 'm.ply'
    verts = np.random.default_rng().uniform(size=[5, 3]).astype(np.float32)
    shapes.write_ply(str(path), verts, np.array([[0, 1, 2], [2, 3, 4]]))
    assert demo.ply_vertex_count(str(path)) == 5
    (tmp_path / 'bad.ply').write_text('not a ply\n')
    with pytest.raises(demo.DemoError, match='bad.ply'):
        demo.ply_vertex_count(str(tmp_path / 'bad.ply'))
    strips = []
    for i in range(3):
        pixels = np.random.default_rng().integers(0, 256, [4, 12, 3], dtype=np.uint8)
        PIL.Image.fromarray(pixels).save(tmp_path / f's{i}.png')
        strips.append(pixels)
    grid = demo.sample_grid([str(tmp_path / f's{i}.png') for i in range(3)], columns=2)
    assert grid.shape == (4 + 2 + 4, 12 + 2 + 12, 3)
    np.testing.assert_array_equal(grid[:4, :12], strips[0])
    np.testing.assert_array_equal(grid[:4, 14:], strips[1])
    np.testing.assert_array_equal(grid[6:, :12], strips[2])
    assert (grid[6:, 14:] == 255).all() and (grid[4:6] == 255).all()
