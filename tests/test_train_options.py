"""train.py --dry-run resolves the official command lines to the official training options."""

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import PIL.Image
import pytest

from tests.conftest import ROOT
from training import options as training_options

# Keys we add to upstream's training options, and values that differ on purpose.
ALLOWED_EXTRA = set(training_options.OUR_EXTRA_KEYS)
DEVIATIONS = {
    # Path placeholders written by the fixture's harness.
    ('training_set_kwargs', 'path'),
}


def write_dataset(path, n, res):
    """A zip of n random res x res images with frontal-ish camera labels (valid 25-number labels)."""
    rng = np.random.default_rng()
    labels = []
    with zipfile.ZipFile(path, 'w', compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            img = PIL.Image.fromarray(rng.integers(0, 255, (res, res, 3), dtype=np.uint8))
            buf = io.BytesIO()
            img.save(buf, format='png')
            name = f'{i:08d}.png'
            zf.writestr(name, buf.getvalue())
            pose = np.eye(4)
            pose[:3, :3] = np.diag([1, -1, -1])
            pose[2, 3] = 2.7
            intr = [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]
            labels.append([name, pose.flatten().tolist() + intr])
        zf.writestr('dataset.json', json.dumps({'labels': labels}))


def dry_run(args):
    res = subprocess.run([sys.executable, 'train.py', '--dry-run', *args], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def compare(ours, official, path=()):
    problems = []
    for key in sorted(set(ours) | set(official)):
        where = path + (key,)
        if where in DEVIATIONS:
            continue
        if key not in official:
            if not path and key in ALLOWED_EXTRA:
                continue
            problems.append(f'extra key {"/".join(where)}={ours[key]!r}')
        elif key not in ours:
            problems.append(f'missing key {"/".join(where)}={official[key]!r}')
        elif isinstance(official[key], dict) and isinstance(ours[key], dict):
            problems += compare(ours[key], official[key], where)
        elif ours[key] != official[key]:
            problems.append(f'{"/".join(where)}: ours {ours[key]!r}, official {official[key]!r}')
    return problems


@pytest.mark.parametrize('config,res', [('ffhq512', 512), ('small', 128)])
def test_dry_run_matches_official_options(fixtures_dir, tmp_path, config, res):
    fixture = json.loads((fixtures_dir / f'official-{config}-config.json').read_text())['meta']
    official = fixture['training_options']
    data = tmp_path / f'data-{config}.zip'
    write_dataset(data, 4, res)
    args = []
    for flag in fixture['train_py_flags']:
        if flag.startswith('--data='):
            flag = f'--data={data}'
        elif flag.startswith('--outdir='):
            flag = f'--outdir={tmp_path / "runs"}'
        elif flag == '--dry-run':
            continue
        args.append(flag)
    ours = dry_run(args)
    if config == 'small':  # The fixture's harness changed the depth samples after building the config.
        for key, value in fixture['render_overrides'].items():
            ours['G_kwargs']['rendering_kwargs'][key] = value
    assert compare(ours, official) == []
    assert not (tmp_path / 'runs').exists()  # A dry run writes nothing.


def test_invalid_combinations_fail_before_work(tmp_path):
    data = tmp_path / 'd.zip'
    write_dataset(data, 2, 64)
    base = [sys.executable, 'train.py', f'--outdir={tmp_path / "runs"}', '--dry-run', f'--data={data}']
    res = subprocess.run(base + ['--cfg=ffhq', '--gpus=1', '--batch=4', '--gamma=1'], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode != 0 and 'no super-resolution module fits 64x64' in res.stderr
    res = subprocess.run(base + ['--cfg=tiny', '--gpus=2', '--batch=6', '--batch-gpu=2'], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and 'multiple of --gpus=2 times --batch-gpu=2' in res.stderr
    res = subprocess.run(base + ['--cfg=ffhq', '--gpus=1', '--batch=4'], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0 and '--gamma is required' in res.stderr
    res = subprocess.run(base + ['--cfg=tiny', '--reg_type=l1-alt'], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode != 0 and 'l1-alt is not implemented' in res.stderr
    res = subprocess.run(base[:-1] + [f'--data={tmp_path / "missing.zip"}', '--cfg=tiny'], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and 'missing.zip' in res.stderr and 'Traceback' not in res.stderr


def test_run_dir_naming(tmp_path):
    (tmp_path / '00007-old').mkdir()
    (tmp_path / 'notes').mkdir()
    assert training_options.next_run_dir(str(tmp_path), 'ffhq-x-gpus1-batch4-gamma1').endswith(
        '00008-ffhq-x-gpus1-batch4-gamma1')
    assert training_options.next_run_dir(str(tmp_path / 'new'), 'd').endswith('00000-d')
