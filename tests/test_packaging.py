"""Packaging: environment.yml lists the packages of pyproject.toml; the layout is there; the README's
first bash block holds exactly two commands and .ci/run runs the second."""

import pathlib
import re
import subprocess
import sys
import tomllib

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r'[<>=!~\[ ]', requirement, maxsplit=1)[0].lower().replace('_', '-')


def test_environment_yml_lists_pyproject_packages():
    project = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']
    env = yaml.safe_load((ROOT / 'environment.yml').read_text())
    conda = {('torch' if _name(d) == 'pytorch' else _name(d)) for d in env['dependencies'] if isinstance(d, str)}
    wanted = {_name(d) for d in project['dependencies']} | {_name(d) for d in project['optional-dependencies']['shapes']}
    assert wanted <= conda, f'missing from environment.yml: {sorted(wanted - conda)}'
    python = [d for d in env['dependencies'] if isinstance(d, str) and d.startswith('python')]
    assert python and '3.10' in python[0] and project['requires-python'] == '>=3.10'


def test_layout():
    for name in ['train.py', 'gen_videos.py', 'gen_samples.py', 'calc_metrics.py', 'dataset_tool.py', 'legacy.py',
                 'environment.yml', 'README.md', 'setup.sh', '.ci/run']:
        assert (ROOT / name).is_file(), name
    for name in ['dnnlib', 'torch_utils', 'torch_utils/ops', 'training', 'metrics', 'tests']:
        assert (ROOT / name).is_dir(), name


def test_readme_commands_and_ci():
    text = (ROOT / 'README.md').read_text()
    assert text.split('```bash', 1)[0].count('\n') <= 3, 'the README must open with the bash block'
    block = text.split('```bash', 1)[1].split('```', 1)[0].strip().splitlines()
    assert len(block) == 2, block
    assert block[0].startswith('bash setup.sh') and block[1].startswith('bash setup.sh')
    assert 'pytest' in block[1]
    ci = (ROOT / '.ci' / 'run').read_text()
    assert 'sed -n 2p' in ci and 'exec bash -c' in ci


def test_selfcheck_prints_a_line_per_op():
    res = subprocess.run([sys.executable, '-m', 'torch_utils.selfcheck'], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    for op in ['bias_act', 'upfirdn2d', 'conv2d_resample', 'filtered_lrelu', 'fma']:
        assert re.search(rf'^{op}\s+ok', res.stdout, re.M), res.stdout
