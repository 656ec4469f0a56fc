"""Several ranks (gloo on the CPU), multi-node launches, failure handling, exact resume and preemption."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, fast_options
from training import distributed, training_loop

PY = sys.executable


def _worker(rank, num_gpus, device, c, run_dir, out):
    """One rank: train, then save this rank's parameters and optimiser state."""
    torch.set_num_threads(1)
    kwargs = {k: v for k, v in c.items() if k not in ('cfg', 'num_gpus')}
    result = training_loop.training_loop(run_dir=run_dir, rank=rank, num_gpus=num_gpus, device=device, **kwargs)
    torch.save({name: {k: v.detach().clone() for k, v in result[name].named_parameters()}
                for name in ['G', 'D', 'G_ema']}, os.path.join(out, f'rank{rank}.pt'))


def _train(c, run_dir, out, num_gpus):
    os.makedirs(run_dir, exist_ok=True)
    os.makedirs(out, exist_ok=True)
    distributed.launch(_worker, num_gpus, dict(c=dict(c), run_dir=str(run_dir), out=str(out)))
    return [torch.load(os.path.join(out, f'rank{r}.pt')) for r in range(num_gpus)]


def _max_diff(a, b):
    """Largest difference of any tensor, relative to that tensor's largest magnitude (at least 1)."""
    return max(((a[n][k] - b[n][k]).abs().max() / b[n][k].abs().max().clamp(min=1)).item() for n in a for k in a[n])


def test_two_ranks_equal_one_process_on_the_combined_batch(synthetic32, tmp_path):
    common = dict(kimg=0.012, snap=100, image_grid=None)
    c2, _ = fast_options(synthetic32, gpus=2, batch=4, batch_gpu=2, **common)
    c2.image_snapshot_ticks = None
    two = _train(c2, tmp_path / 'two', tmp_path / 'out2', 2)
    assert _max_diff(two[0], two[1]) == 0  # Identical on both ranks.

    c1, _ = fast_options(synthetic32, gpus=1, batch=4, batch_gpu=2, **common)  # Same samples, accumulated.
    c1.image_snapshot_ticks = None
    (one,) = _train(c1, tmp_path / 'one', tmp_path / 'out1', 1)
    assert _max_diff(one, two[0]) < 1e-6

    c0, _ = fast_options(synthetic32, gpus=1, batch=2, batch_gpu=2, **common)  # Rank 0's share only.
    c0.image_snapshot_ticks = None
    (half,) = _train(c0, tmp_path / 'half', tmp_path / 'out0', 1)
    assert _max_diff(half, two[0]) > 1e-4


def _cli(data, outdir, *extra):
    return ['train.py', f'--outdir={outdir}', '--cfg=tiny', f'--data={data}', '--metrics=none', '--workers=0',
            '--gamma=1', '--batch=4', '--kimg=0.012', '--tick=0.004', '--snap=100', '--cbase=512', '--cmax=32',
            '--neural_rendering_resolution_initial=16', '--image-grid=2x2', '--set=z_dim=32', '--set=w_dim=32',
            '--set=triplane_resolution=32', '--set=triplane_channels=8', '--set=decoder_hidden_dim=16',
            '--set=sr_kwargs={"input_resolution": 16, "block_channels": [16, 16]}',
            '--set=rendering={"depth_resolution": 8, "depth_resolution_importance": 8}', *extra]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_',
                                                                   'SLURM_', 'TORCHELASTIC', 'EG3D_FAULT'))}
    env.update(OMP_NUM_THREADS='1', OMP_WAIT_POLICY='PASSIVE', **extra)
    return env


def _run_pair(commands, envs, timeout=240):
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd, env in zip(commands, envs)]
    outs = []
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        outs.append((p.returncode, out))
    return outs


def test_torchrun_two_nodes_and_slurm(synthetic32, tmp_path):
    port = distributed.free_port()
    torchrun = [PY, '-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=1', '--master_addr=127.0.0.1',
                f'--master_port={port}']
    cmds = [torchrun + [f'--node_rank={i}'] + _cli(synthetic32, tmp_path / 'torchrun') for i in range(2)]
    for code, out in _run_pair(cmds, [_env(), _env()]):
        assert code == 0, out[-3000:]
    (run_dir,) = (tmp_path / 'torchrun').iterdir()
    assert 'gpus2' in run_dir.name and (run_dir / 'network-snapshot-000000.pkl').is_file()

    port = distributed.free_port()
    envs = [_env(SLURM_PROCID=str(i), SLURM_NTASKS='2', SLURM_LOCALID='0', SLURM_JOB_NODELIST='localhost',
                 MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port)) for i in range(2)]
    cmds = [[PY] + _cli(synthetic32, tmp_path / f'slurm{i}', '--gpus=2') for i in range(2)]
    outs = _run_pair(cmds, envs)
    for code, out in outs:
        assert code == 0, out[-3000:]
    assert 'Training for' in outs[0][1]
    stats = (next((tmp_path / 'slurm0').iterdir()) / 'stats.jsonl').read_text().splitlines()
    assert len(stats) == 3


def test_one_rank_failing_stops_the_other(synthetic32, tmp_path):
    """Two independent processes (SLURM-style, so no launcher kills them): rank 1 raises at batch 1;
    rank 0 must notice through the watchdog and exit non-zero instead of waiting in a collective."""
    port = distributed.free_port()
    envs = [_env(SLURM_PROCID=str(i), SLURM_NTASKS='2', SLURM_LOCALID='0', MASTER_ADDR='127.0.0.1',
                 MASTER_PORT=str(port), EG3D_FAULT_INJECT='rank=1,batch=1') for i in range(2)]
    cmds = [[PY] + _cli(synthetic32, tmp_path / f'run{i}', '--gpus=2', '--kimg=10', '--heartbeat-timeout=20')
            for i in range(2)]
    t0 = time.monotonic()
    outs = _run_pair(cmds, envs, timeout=180)
    codes = [code for code, _ in outs]
    assert codes[0] != 0 and codes[1] != 0, outs
    assert 'injected failure' in outs[1][1]
    assert 'Exiting...' not in outs[0][1]  # Rank 0 stopped (the watchdog, or gloo seeing the peer gone).
    assert time.monotonic() - t0 < 60


def _states(run_dir):
    return sorted(p for p in os.listdir(run_dir) if p.startswith('training-state-'))


def _ticks(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, 'stats.jsonl'))]


def _exact_options(data, **extra):
    c, _ = fast_options(data, kimg=0.016, tick=0.004, snap=1, aug='ada', target=-1.5, density_reg_every=2,
                        d_reg_interval=2, **extra)
    c.ada_interval = 1
    c.ada_kimg = 0.1  # With a target below -1, p rises 0.04 per iteration: augmentation from the second on.
    c.image_snapshot_ticks = None
    return c


@pytest.mark.parametrize('num_gpus', [1, 2])
def test_exact_resume(synthetic32, tmp_path, num_gpus):
    """N steps, save, resume, M steps == N + M steps: parameters, optimiser state and the next losses,
    bit for bit, with ADA, blur, GPC and density regularisation on."""
    extra = dict(gpus=num_gpus, batch=4, batch_gpu=4 // num_gpus)
    full = _exact_options(synthetic32, **extra)
    full_dir = tmp_path / 'full'
    ref = _train(full, full_dir, tmp_path / 'out_full', num_gpus)

    part = _exact_options(synthetic32, **extra)
    part.total_kimg = 0.008
    part_dir = tmp_path / 'part'
    _train(part, part_dir, tmp_path / 'out_part', num_gpus)
    assert _states(part_dir) == ['training-state-000000.pt']
    resumed = _exact_options(synthetic32, **extra)
    resumed.resume_state = str(part_dir / 'training-state-000000.pt')
    res = _train(resumed, part_dir, tmp_path / 'out_resumed', num_gpus)
    for r in range(num_gpus):
        assert _max_diff(res[r], ref[r]) == 0

    state_full = torch.load(full_dir / 'training-state-000000.pt', weights_only=True)['training_state']
    state_res = torch.load(part_dir / 'training-state-000000.pt', weights_only=True)['training_state']
    for name in ['G', 'D']:
        for a, b in zip(state_full['optimizers'][name]['state'].values(), state_res['optimizers'][name]['state'].values()):
            for key in a:
                assert torch.equal(torch.as_tensor(a[key]), torch.as_tensor(b[key]))
    assert state_res['loop']['cur_nimg'] == state_full['loop']['cur_nimg'] == 16

    # The losses of the iterations after the resume point are the same numbers.
    full_ticks, part_ticks = _ticks(full_dir), _ticks(part_dir)
    after = [t for t in part_ticks if t['Progress/kimg']['mean'] > 0.008]
    assert len(after) == 2
    for ours, theirs in zip(after, full_ticks[-2:]):
        for key in ['Loss/G/loss', 'Loss/D/loss', 'Loss/r1_penalty', 'Loss/signs/real', 'Progress/augment']:
            if key in theirs:
                assert ours[key] == theirs[key], key
    assert full_ticks[-1]['Progress/augment']['mean'] > 0  # ADA was active.


def _children(pid):
    out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_preemption_writes_one_state_and_resumes_exactly(synthetic32, tmp_path):
    outdir = tmp_path / 'runs'
    cmd = [PY] + _cli(synthetic32, outdir, '--gpus=2', '--kimg=1', '--snap=1000')
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # Wait until training runs (the first tick line), then preempt both ranks.
    deadline = time.monotonic() + 180
    run_dir = None
    while time.monotonic() < deadline:
        dirs = list(outdir.iterdir()) if outdir.exists() else []
        if dirs and (dirs[0] / 'stats.jsonl').exists() and (dirs[0] / 'stats.jsonl').read_text():
            run_dir = dirs[0]
            break
        time.sleep(0.5)
    assert run_dir is not None, proc.communicate(timeout=5)[0][-3000:]
    ranks = [pid for pid in _children(proc.pid) if 'spawn_main' in open(f'/proc/{pid}/cmdline').read()]
    assert len(ranks) == 2
    for pid in ranks:
        os.kill(pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert 'Stop requested' in out
    assert _states(run_dir) == ['training-state-000000.pt']  # One state (it replaced the tick-0 one).
    stop_nimg = torch.load(run_dir / 'training-state-000000.pt', weights_only=True)['training_state']['loop']['cur_nimg']
    assert 8 <= stop_nimg < 1000

    # Resume from the stop for 2 more iterations, and compare with an uninterrupted run of that length.
    total = (stop_nimg + 8) / 1000
    res = subprocess.run([PY] + _cli(synthetic32, outdir, '--gpus=2', f'--kimg={total}', '--resume=latest'),
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert 'Resuming exactly' in res.stdout
    ref_dir = tmp_path / 'ref'
    res = subprocess.run([PY] + _cli(synthetic32, ref_dir, '--gpus=2', f'--kimg={total}'), cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    a = torch.load(run_dir / 'network-snapshot-000000.pkl', weights_only=True)
    (ref_run,) = ref_dir.iterdir()
    b = torch.load(ref_run / 'network-snapshot-000000.pkl', weights_only=True)
    for name in ['G', 'D', 'G_ema']:
        for key, value in a[name]['state'].items():
            assert torch.equal(value, b[name]['state'][key]), (name, key)
