"""torch_utils.malloc_tuning: applied once, inherited by child processes, switchable off."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = ('import os; from torch_utils import malloc_tuning as m; r = m.apply(); '
         'print(r, m.apply(), os.environ.get("MALLOC_MMAP_MAX_"))')


def _run(env_update: dict) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith('MALLOC_') and k != 'EG3D_MALLOC_TUNING'}
    env.update(env_update)
    return subprocess.run([sys.executable, '-c', PROBE], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
                          check=True).stdout.split()


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='glibc only')
def test_apply_sets_and_exports():
    assert _run({}) == ['True', 'True', '0']


def test_switch_off_and_user_choice():
    assert _run({'EG3D_MALLOC_TUNING': '0'}) == ['False', 'False', 'None']
    assert _run({'MALLOC_MMAP_MAX_': '5'}) == ['False', 'False', '5']
