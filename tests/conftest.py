"""Shared test helpers: the official fixtures folder and small utilities."""

import os
import pathlib

# Threads sleep instead of spinning while they wait: on a shared 2-core machine spinning OpenMP threads
# slow other processes (and 2-thread ops) down by 10x or more. Must be set before torch loads OpenMP.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import pytest  # noqa: E402
import torch  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = pathlib.Path(os.environ.get('EG3D_FIXTURES', ROOT.parent / 'shared' / 'fixtures'))


@pytest.fixture(scope='session')
def fixtures_dir() -> pathlib.Path:
    """../shared/fixtures (or $EG3D_FIXTURES); tests that need it skip with a message when absent."""
    if not (FIXTURES / 'official-small-s1.npz').is_file():
        pytest.skip(f'needs the official fixtures in {FIXTURES} (set EG3D_FIXTURES)')
    return FIXTURES


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


# ----------------------------------------------------------------------------
# A training configuration small enough for tests: the tiny preset shrunk to 32x32 images.

FAST_OVERRIDES = {
    'gpus': 1, 'batch': 4, 'gamma': 1.0, 'workers': 0, 'kimg': 0.012, 'tick': 0.004, 'snap': 1, 'metrics': [],
    'z_dim': 32, 'w_dim': 32, 'cbase': 512, 'cmax': 32, 'map_depth': 1,
    'triplane_resolution': 32, 'triplane_channels': 8, 'decoder_hidden_dim': 16,
    'sr_kwargs': {'input_resolution': 16, 'block_channels': [16, 16]},
    'neural_rendering_resolution_initial': 16, 'image_grid': (2, 2),
    'rendering': {'depth_resolution': 8, 'depth_resolution_importance': 8},
    # As the tiny preset was before demo.py reshaped it: the tests cover GPC (tiny now leaves it off for
    # synthetic objects), and their float tolerances (e.g. 2 ranks vs 1 process) were set with this blur.
    'gen_pose_cond': True, 'blur_init_sigma': 10, 'blur_fade_kimg': 200,
}


def fast_options(data: str, **overrides):
    """(training options, run description) for the shrunk tiny preset on `data`."""
    from training import options
    from training.presets import resolve_preset
    opts = resolve_preset('tiny', {**FAST_OVERRIDES, **overrides})
    opts['data'] = data
    return options.build_training_options(opts)


@pytest.fixture(scope='session')
def synthetic32(tmp_path_factory) -> str:
    """16 synthetic box images at 32x32 with camera labels, as a zip (built once per test run)."""
    import subprocess
    import sys
    path = tmp_path_factory.mktemp('data') / 'box32.zip'
    subprocess.run([sys.executable, str(ROOT / 'dataset_tool.py'), '--source=synthetic:box', f'--dest={path}',
                    '--max-images=16', '--resolution=32x32'], check=True, capture_output=True, cwd=ROOT)
    return str(path)


@pytest.fixture(scope='session')
def fused_ops():
    """The fused-op plugins for the CPU, built once per test run (or loaded from the build cache,
    $EG3D_EXTENSIONS_DIR or ~/.cache/dnnlib/torch_extensions), in parallel. A failed build fails the
    tests that use them, with its cause; it does not skip them."""
    from concurrent.futures import ThreadPoolExecutor

    from torch_utils import custom_ops
    from torch_utils.ops import _impl
    with ThreadPoolExecutor(len(_impl.PLUGINS)) as pool:
        jobs = {name: pool.submit(custom_ops.get_plugin, spec, 'cpu') for name, spec in _impl.PLUGINS.items()}
        return {name: job.result() for name, job in jobs.items()}


@pytest.fixture
def render_ops_host(fused_ops, monkeypatch):
    """The render_ops plugin's host kernels (built by fused_ops), with EG3D_FUSED_OPS on."""
    from torch_utils.ops import _impl
    monkeypatch.setenv('EG3D_FUSED_OPS', '1')
    p = _impl.fused_plugin('render_ops', 'cpu')
    assert p is not None, _impl.unavailable_cause('render_ops', 'cpu')
    return p
