"""Scalar statistics reported anywhere during training and collected, across ranks, once per tick.

    training_stats.report('Loss/G/loss', loss)        # any tensor or number; every element counts
    collector = training_stats.Collector(regex='.*')
    collector.update()                                  # gathers what was reported since the last update
    collector.mean('Loss/G/loss'), collector.std('Loss/G/loss'), collector.num('Loss/G/loss')

Works without a process group (single process), with gloo on the CPU and with NCCL on CUDA. Every
rank must call Collector.update() the same number of times; the set of names may differ per rank.
"""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np
import torch

import dnnlib

_counter_dtype = torch.float64  # [count, sum, sum of squares]
_sync_device: torch.device | None = None
_counters: dict[str, dict[torch.device, torch.Tensor]] = defaultdict(dict)  # name -> device -> [3]
_cumulative: dict[str, torch.Tensor] = {}  # name -> [3] on the CPU, totals since the start


def init_multiprocessing(rank: int | None = None, sync_device: torch.device | str | None = None) -> None:
    """Name the device whose tensors are all-reduced (a CUDA device for NCCL; None means the CPU)."""
    global _sync_device
    _sync_device = torch.device(sync_device) if sync_device is not None else None


def report(name: str, value) -> object:
    """Record every element of `value` under `name`; returns `value` unchanged."""
    if isinstance(value, torch.Tensor):
        elems = value.detach().flatten().to(_counter_dtype)
    else:
        elems = torch.as_tensor(value, dtype=_counter_dtype).flatten()
    if elems.numel() == 0:
        return value
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])
    device = moments.device
    counters = _counters[name]
    if device in counters:
        counters[device].add_(moments)
    else:
        counters[device] = moments
    return value


def report0(name: str, value) -> object:
    """As report(), but only rank 0 records (for values that are identical on every rank)."""
    if _rank() == 0:
        report(name, value)
    return value


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _reduce_device() -> torch.device:
    if _sync_device is not None:
        return _sync_device
    if _distributed() and torch.distributed.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def _sync(names: list[str]) -> dict[str, torch.Tensor]:
    """Fold what was reported since the last sync (on every device and rank) into the cumulative
    moments of `names`, and return those cumulative moments. Collectors take differences, so any
    number of them can watch the same names."""
    if _distributed():
        gathered: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, sorted(names))
        names = sorted(set().union(*gathered))
    device = _reduce_device()
    deltas = torch.zeros([len(names), 3], dtype=_counter_dtype, device=device)
    for idx, name in enumerate(names):
        for moments in _counters.pop(name, {}).values():
            deltas[idx] += moments.to(device)
    if _distributed():
        torch.distributed.all_reduce(deltas)
    deltas = deltas.cpu()
    result = {}
    for idx, name in enumerate(names):
        total = _cumulative.get(name)
        _cumulative[name] = deltas[idx] if total is None else total + deltas[idx]
        result[name] = _cumulative[name]
    return result


class Collector:
    """Means and standard deviations of the statistics whose names match `regex`, over the interval
    since this collector's previous update().

    keep_previous: a name that received nothing in the last interval keeps its previous values.
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous
        self._seen: dict[str, torch.Tensor] = {}     # Cumulative moments at the previous update.
        self._moments: dict[str, torch.Tensor] = {}  # Moments of the last interval.

    def names(self) -> list[str]:
        return [name for name in sorted(set(_counters) | set(_cumulative)) if self._regex.fullmatch(name)]

    def update(self) -> None:
        """Collect what was reported since the previous update (all ranks must call this together)."""
        cumulative = _sync(self.names())
        if not self._keep_previous:
            self._moments.clear()
        for name, total in cumulative.items():
            if not self._regex.fullmatch(name):
                continue
            delta = total - self._seen.get(name, torch.zeros_like(total))
            self._seen[name] = total.clone()
            if delta[0] > 0 or name not in self._moments:
                self._moments[name] = delta

    def state_dict(self) -> dict:
        return {'seen': {k: v.clone() for k, v in self._seen.items()},
                'moments': {k: v.clone() for k, v in self._moments.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._seen = {k: v.to(_counter_dtype).clone() for k, v in state['seen'].items()}
        self._moments = {k: v.to(_counter_dtype).clone() for k, v in state['moments'].items()}

    def num(self, name: str) -> int:
        moments = self._moments.get(name)
        return 0 if moments is None else int(moments[0])

    def mean(self, name: str) -> float:
        moments = self._moments.get(name)
        if moments is None or moments[0] == 0:
            return float('nan')
        return float(moments[1] / moments[0])

    def std(self, name: str) -> float:
        """Population standard deviation (numpy's default, ddof=0)."""
        moments = self._moments.get(name)
        if moments is None or moments[0] == 0:
            return float('nan')
        if moments[0] == 1:
            return 0.0
        mean = float(moments[1] / moments[0])
        raw_var = float(moments[2] / moments[0])
        return float(np.sqrt(max(raw_var - mean * mean, 0.0)))

    def as_dict(self) -> dnnlib.EasyDict:
        """{name: {num, mean, std}} for every collected name (what stats.jsonl stores)."""
        return dnnlib.EasyDict({name: dnnlib.EasyDict(num=self.num(name), mean=self.mean(name), std=self.std(name))
                                for name in sorted(self._moments)})

    def __getitem__(self, name: str) -> float:
        return self.mean(name)


def state_dict() -> dict:
    """This rank's statistics (what was reported but not yet collected, and the cumulative moments), for
    an exact resume."""
    pending = {name: sum(m.cpu() for m in per_device.values()) for name, per_device in _counters.items()}
    return {'pending': pending, 'cumulative': {name: t.clone() for name, t in _cumulative.items()}}


def load_state_dict(state: dict) -> None:
    reset()
    for name, moments in state['pending'].items():
        _counters[name][torch.device('cpu')] = moments.to(_counter_dtype).clone()
    for name, moments in state['cumulative'].items():
        _cumulative[name] = moments.to(_counter_dtype).clone()


def reset() -> None:
    """Forget everything reported so far (tests and fresh runs in one process)."""
    _counters.clear()
    _cumulative.clear()
