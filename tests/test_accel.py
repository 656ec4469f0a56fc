"""GPU speed switches (training/accel.py, docs/gpu.md): CPU behaviour (clear errors, no-ops), the fp16 loss
scaler against hand-computed values, the option plumbing from train.py flags to the training options,
and the GPU benchmark's CPU smoke test."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT, fast_options
from training import accel


def test_check_on_cpu():
    accel.check('cpu', 'fp32', None)
    for precision in ('bf16', 'fp16'):
        with pytest.raises(ValueError, match=f'precision={precision} needs a CUDA device'):
            accel.check('cpu', precision)
    with pytest.raises(ValueError, match='compile=default needs a CUDA device'):
        accel.check('cpu', 'fp32', 'default')
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16, got 'fp64'"):
        accel.check('cpu', 'fp64')
    with pytest.raises(ValueError, match='compile mode must be one of'):
        accel.validate('fp32', 'fast')


def test_fp32_autocast_and_tf32_are_no_ops_on_cpu():
    a = torch.randn(5, 7, dtype=torch.float32)
    b = torch.randn(7, 3, dtype=torch.float32)
    with accel.autocast('cpu', 'fp32'):
        out = a @ b
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), a.double() @ b.double(), atol=1e-5, rtol=1e-5)
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    accel.set_tf32('cpu', True)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert accel.compile_networks(torch.nn.Linear(2, 2), None, None) == []


def test_compile_targets():
    class Backbone(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.mapping = torch.nn.Linear(2, 2)
            self.synthesis = torch.nn.Linear(2, 3)

    G = torch.nn.Module()
    G.backbone = Backbone()
    G.superresolution = torch.nn.Linear(3, 3)
    D = torch.nn.Linear(3, 1)
    targets = accel.compile_targets(G, D)
    assert targets == [G.backbone.synthesis, G.superresolution, D]


def _module_with_grads(values):
    m = torch.nn.Linear(2, 2, bias=False)
    m.weight.grad = torch.tensor(values, dtype=torch.float32)
    return m


def test_fp16_loss_scaler():
    grads = [[1024.0, -2048.0], [512.0, 3.0]]
    off = accel.FP16LossScaler(enabled=False)
    m = _module_with_grads(grads)
    assert off.scale == 1.0 and off.unscale(m)
    assert torch.equal(m.weight.grad, torch.tensor(grads))

    scaler = accel.FP16LossScaler(enabled=True, init_scale=512.0, growth_interval=2)
    m = _module_with_grads(grads)
    assert scaler.unscale(m)
    assert torch.equal(m.weight.grad, torch.tensor([[2.0, -4.0], [1.0, 3.0 / 512]]))
    assert scaler.scale == 512.0
    assert scaler.unscale(_module_with_grads(grads)) and scaler.scale == 1024.0     # 2 good steps: grows.
    bad = _module_with_grads([[1.0, float('inf')], [0.5, 2.0]])
    assert not scaler.unscale(bad) and scaler.scale == 512.0                        # Overflow: skip, halve.
    assert not scaler.unscale(_module_with_grads([[float('nan'), 1.0], [1.0, 1.0]]))
    assert scaler.scale == 256.0


def test_training_options_keys(synthetic32):
    c, _ = fast_options(synthetic32)
    assert not {'precision', 'compile_mode', 'allow_tf32'} & set(c)    # Defaults: upstream's options.
    c, _ = fast_options(synthetic32, precision='bf16', compile='max-autotune', tf32=True)
    assert (c.precision, c.compile_mode, c.allow_tf32) == ('bf16', 'max-autotune', True)
    from training.options import OptionsError
    with pytest.raises(OptionsError, match='precision'):
        fast_options(synthetic32, precision='fp8')


@pytest.mark.parametrize('flag', ['--precision=fp16', '--compile=default'])
def test_train_cli_refuses_cuda_only_switches_on_cpu(synthetic32, tmp_path, flag):
    if torch.cuda.is_available():
        pytest.skip('CUDA present: the switches are valid')
    result = subprocess.run([sys.executable, str(ROOT / 'train.py'), f'--outdir={tmp_path}', '--cfg=tiny',
                             f'--data={synthetic32}', flag], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode != 0
    assert 'needs a CUDA device' in result.stderr
    assert not list(tmp_path.iterdir())                                # Nothing started.


@pytest.mark.slow
def test_bench_gpu_cpu_smoke():
    result = subprocess.run([sys.executable, str(ROOT / 'benchmarks' / 'bench_gpu.py'), '--device', 'cpu',
                             '--presets', 'tiny', '--iters', '1', '--warmup', '0', '--neural-res', '16'],
                            capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith('| tiny |')]
    assert len(rows) == 2
    for row in rows:
        cells = [cell.strip() for cell in row.strip('|').split('|')]
        s_per_kimg, images_per_s = float(cells[4]), float(cells[5])
        assert s_per_kimg > 0 and abs(s_per_kimg * images_per_s - 1000) < 0.02 * 1000
