"""The training loop end to end at a tiny size: train.py runs, writes its outputs, learns, and its
snapshots reload with identical outputs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import legacy
from tests.conftest import FAST_OVERRIDES, ROOT, fast_options
from training import training_loop


def _cli_args(data, outdir, **overrides):
    """train.py flags for the shrunk tiny preset: plain flags where train.py has them, --set for the rest."""
    o = {**FAST_OVERRIDES, **overrides}
    flags = {'gpus', 'batch', 'gamma', 'kimg', 'tick', 'snap', 'workers', 'cbase', 'cmax',
             'neural_rendering_resolution_initial'}
    args = [f'--outdir={outdir}', '--cfg=tiny', f'--data={data}', '--metrics=none', '--image-grid=2x2']
    for key, value in o.items():
        if key in flags:
            args.append(f'--{key}={value}')
        elif key not in ('metrics', 'image_grid'):
            args.append(f'--set={key}={json.dumps(value)}')
    return args


def test_train_py_two_ticks(synthetic32, tmp_path):
    """train.py with the tiny preset (shrunk through flags) trains 2 ticks and writes its run directory."""
    outdir = tmp_path / 'runs'
    res = subprocess.run([sys.executable, 'train.py', *_cli_args(synthetic32, outdir)], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (run_dir,) = outdir.iterdir()
    assert run_dir.name == '00000-tiny-box32-gpus1-batch4-gamma1'
    names = set(os.listdir(run_dir))
    for name in ['training_options.json', 'log.txt', 'stats.jsonl', 'reals.png', 'fakes000000.png',
                 'fakes000000_raw.png', 'fakes000000_depth.png', 'network-snapshot-000000.pkl',
                 'training-state-000000.pt']:
        assert name in names, name
    assert not [n for n in names if n.endswith('.tmp')]
    options = json.loads((run_dir / 'training_options.json').read_text())
    assert options['batch_size'] == 4 and options['G_kwargs']['class_name'] == 'training.triplane.TriPlaneGenerator'
    ticks = [json.loads(line) for line in (run_dir / 'stats.jsonl').read_text().splitlines()]
    assert [t['Progress/tick']['mean'] for t in ticks] == [0, 1, 2]
    for t in ticks[1:]:
        for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/scores/real', 'Loss/scores/fake']:
            assert np.isfinite(t[key]['mean']), key
    log = (run_dir / 'log.txt').read_text()
    assert 'sec/kimg' in log and 'tick 2' in log

    # Parameters moved: after the first step G_ema equals G (EMA ramp-up); after the second it lags behind.
    data = legacy.load_network_pkl(str(run_dir / 'network-snapshot-000000.pkl'))
    diffs = [(a - b).abs().max().item() for a, b in zip(data['G'].parameters(), data['G_ema'].parameters())]
    assert max(diffs) > 0


def test_loop_snapshot_reloads_identically(synthetic32, tmp_path):
    c, _ = fast_options(synthetic32)
    kwargs = {k: v for k, v in c.items() if k not in ('cfg', 'num_gpus')}
    torch.set_num_threads(1)
    result = training_loop.training_loop(run_dir=str(tmp_path), rank=0, num_gpus=1, **kwargs)
    data = legacy.load_network_pkl(str(tmp_path / 'network-snapshot-000000.pkl'))
    for name in ['G', 'D', 'G_ema']:
        ours = dict(result[name].named_parameters())
        for key, value in data[name].named_parameters():
            assert torch.equal(value, ours[key]), (name, key)
    G0, G1 = result.G_ema.eval(), data['G_ema']
    assert G1.neural_rendering_resolution == G0.neural_rendering_resolution
    z = torch.randn(2, G0.z_dim)
    c = torch.from_numpy(np.stack([_label(synthetic32, i) for i in range(2)]))
    G0.rendering_kwargs['jitter'] = G1.rendering_kwargs['jitter'] = False
    with torch.no_grad():
        a, b = G0(z, c, noise_mode='const'), G1(z, c, noise_mode='const')
    for key in ['image', 'image_raw', 'image_depth']:
        assert torch.equal(a[key], b[key]), key


def _label(path, idx):
    from training.dataset import ImageFolderDataset
    return ImageFolderDataset(path, use_labels=True).get_label(idx)


def test_calc_metrics_reproduces_the_value_logged_in_training(synthetic32, tmp_path):
    """The loop's metric at a snapshot and calc_metrics.py on that snapshot are one computation."""
    c, _ = fast_options(synthetic32, metrics=['swd256'], kimg=0.008, snap=1)
    c.image_snapshot_ticks = None
    kwargs = {k: v for k, v in c.items() if k not in ('cfg', 'num_gpus')}
    (tmp_path / 'training_options.json').write_text(json.dumps(c))  # As train.py writes it.
    training_loop.training_loop(run_dir=str(tmp_path), rank=0, num_gpus=1, **kwargs)
    logged = [json.loads(line) for line in (tmp_path / 'metric-swd256.jsonl').read_text().splitlines()]
    assert len(logged) == 2 and logged[-1]['snapshot_pkl'] == 'network-snapshot-000000.pkl'
    res = subprocess.run([sys.executable, 'calc_metrics.py', '--metrics=swd256',
                          f'--network={tmp_path / "network-snapshot-000000.pkl"}', f'--data={synthetic32}'],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    line = json.loads([ln for ln in res.stdout.splitlines() if ln.startswith('{')][-1])
    assert line['results']['swd256'] == logged[-1]['results']['swd256']
    assert np.isfinite(line['results']['swd256']) and line['results']['swd256'] > 0
