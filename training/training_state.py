"""Training states for exact resume: everything the loop needs to continue as if it had never stopped.

A training state is a network snapshot (G, D, G_ema, augment_pipe, training_set_kwargs: any tool that
reads network snapshots reads it) plus a 'training_state' entry: both optimisers, the loop counters,
the training options, and per-rank state (RNG of torch / CUDA / numpy / Python, and the statistics
reported but not yet collected). The data sampler and every schedule (blur, GPC swap, neural
rendering resolution, EMA ramp-up) are functions of cur_nimg, so they need nothing more.

Written to a temporary name and renamed; read with torch.load(weights_only=True).
"""

from __future__ import annotations

import copy
import glob
import os
import random
import re

import numpy as np
import torch

from torch_utils import snapshot, training_stats

STATE_PATTERN = 'training-state-*.pt'


def state_file_name(kimg: int) -> str:
    return f'training-state-{kimg:06d}.pt'


def capture_rank_state(device: torch.device) -> dict:
    """RNG states and pending statistics of this process."""
    np_state = np.random.get_state()
    state = {
        'torch': torch.get_rng_state(),
        'numpy': {'name': np_state[0], 'keys': torch.from_numpy(np_state[1].astype(np.int64)), 'pos': int(np_state[2]),
                  'has_gauss': int(np_state[3]), 'cached_gaussian': float(np_state[4])},
        'python': [list(part) if isinstance(part, tuple) else part for part in random.getstate()],
        'stats': training_stats.state_dict(),
    }
    if device.type == 'cuda':
        state['cuda'] = torch.cuda.get_rng_state(device)
    return state


def restore_rank_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state['torch'])
    n = state['numpy']
    np.random.set_state((n['name'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'], n['cached_gaussian']))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    training_stats.load_state_dict(state['stats'])
    if device.type == 'cuda' and 'cuda' in state:
        torch.cuda.set_rng_state(state['cuda'], device)


def gather_rank_states(local: dict, num_gpus: int) -> list[dict]:
    """Every rank's state, on every rank (rank 0 writes them)."""
    if num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        states: list = [None] * num_gpus
        torch.distributed.all_gather_object(states, local)
        return states
    return [local]


def save(path: str, *, G, D, G_ema, augment_pipe, training_set_kwargs: dict, optimizers: dict, loop: dict,
         rank_states: list, options: dict | None = None, collectors: dict | None = None) -> None:
    state = dict(optimizers={name: opt.state_dict() for name, opt in optimizers.items()}, loop=loop,
                 ranks=rank_states, options=options or {},
                 collectors={name: col.state_dict() for name, col in (collectors or {}).items() if col is not None})
    snapshot.save(path, dict(training_set_kwargs=training_set_kwargs, G=G, D=D, G_ema=G_ema,
                             augment_pipe=augment_pipe, training_state=state), tensor_keys=('training_state',))


def load(path: str) -> dict:
    """The snapshot dict with its 'training_state'; a clear error when the file is a network snapshot only."""
    data = snapshot.load(path)
    if 'training_state' not in data:
        raise snapshot.SnapshotError(f'{path}: a network snapshot, not a training state (no optimiser or RNG '
                                     f'state): use it with --resume to fine-tune, or pass a training-state-*.pt')
    return data


def is_training_state(path: str) -> bool:
    return os.path.basename(path).startswith('training-state-') and path.endswith('.pt')


def find_latest(path: str) -> str:
    """The newest training state in a run directory, or in the newest run directory under `path`
    that has one."""
    def kimg_of(p):
        match = re.search(r'training-state-(\d+)\.pt$', p)
        return int(match.group(1)) if match else -1

    states = glob.glob(os.path.join(path, STATE_PATTERN))
    if not states:
        run_dirs = sorted((d for d in glob.glob(os.path.join(path, '*')) if os.path.isdir(d)
                           and re.match(r'^\d+', os.path.basename(d))), key=lambda d: int(re.match(r'^\d+', os.path.basename(d)).group()))
        for run_dir in reversed(run_dirs):
            states = glob.glob(os.path.join(run_dir, STATE_PATTERN))
            if states:
                break
    if not states:
        raise FileNotFoundError(f'{path}: no {STATE_PATTERN} here or in any run directory below it')
    return max(states, key=kimg_of)


def restore(state: dict, rank: int, num_gpus: int, device: torch.device, *, G, D, G_ema, augment_pipe,
            optimizers: dict, collectors: dict, random_seed: int = 0) -> None:
    """Load networks, optimisers, this rank's RNG and statistics, and the collectors from a training state."""
    from torch_utils import misc
    for name, module in [('G', G), ('D', D), ('G_ema', G_ema), ('augment_pipe', augment_pipe)]:
        record = state.get(name)
        if (module is None) != (record is None):
            raise snapshot.SnapshotError(f'training state: {name} is {"absent" if record is None else "present"} in '
                                         f'the file but not in this run (were the options changed?)')
        if module is None:
            continue
        try:
            misc.copy_params_and_buffers(record['state'], module, require_all=True)
        except (KeyError, ValueError) as err:
            raise snapshot.SnapshotError(f'training state: {name} does not fit this run\'s network: {err}') from None
        for attr, value in record.get('attrs', {}).items():
            if not attr.startswith('_') and attr in vars(module):
                setattr(module, attr, copy.deepcopy(value))
    ts = state['training_state']
    for name, opt in optimizers.items():
        opt.load_state_dict(ts['optimizers'][name])
    ranks = ts['ranks']
    if len(ranks) == num_gpus:
        restore_rank_state(ranks[rank], device)
    else:
        # Another number of ranks: continue from the same weights and counters, with fresh RNG streams.
        print(f'Warning: the training state was written by {len(ranks)} ranks and this run has {num_gpus}; '
              f'resuming with re-derived random streams (not bit-exact)', flush=True)
        seed = (random_seed * 1_000_003 + rank * 7919 + ts['loop']['cur_nimg']) % (1 << 31)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
    for name, collector in collectors.items():
        if collector is not None and name in ts.get('collectors', {}):
            collector.load_state_dict(ts['collectors'][name])
