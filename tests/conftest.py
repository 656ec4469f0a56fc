"""Shared test helpers: the official fixtures folder and small utilities."""

import os
import pathlib

import pytest
import torch

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
