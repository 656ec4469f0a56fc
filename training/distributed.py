"""Process groups for training on one or many devices and nodes, with failure and preemption handling.

Three ways to start, all ending in one process per device:
- `--gpus N` with no launcher: N local processes (spawned here), rendezvous on 127.0.0.1.
- torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT set): join that group.
- srun (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID): join, with MASTER_ADDR / MASTER_PORT taken from the
  environment (or the first host of SLURM_JOB_NODELIST and a port derived from the job id).
NCCL on CUDA, gloo on the CPU.

A watchdog thread per rank keeps a heartbeat in the rendezvous store. A rank that raises marks the
run failed; the others see it (or a heartbeat that stopped, or a store that vanished) within a few
seconds and exit non-zero instead of waiting in a collective forever.
SIGTERM and SIGUSR1 only set a flag; the loop polls `stop_requested()` at every iteration, the ranks
agree with an all-reduce, and rank 0 writes a training state before everyone exits 0.
"""

from __future__ import annotations

import datetime
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import torch

HEARTBEAT_SECONDS = 1.0


@dataclass
class RankInfo:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _first_slurm_host(nodelist: str) -> str:
    """'node[03-05,09],gpu1' -> 'node03' (the common bracket syntax; scontrol is not required)."""
    first = re.split(r',(?![^\[]*\])', nodelist)[0]
    match = re.match(r'^([^\[]+)\[([^\]]+)\]', first)
    if not match:
        return first
    prefix, ranges = match.groups()
    return prefix + ranges.split(',')[0].split('-')[0]


def rank_from_env(environ=os.environ) -> RankInfo | None:
    """The rank set by torchrun or SLURM, or None when this process was started by hand."""
    if 'RANK' in environ and 'WORLD_SIZE' in environ and 'MASTER_ADDR' in environ:
        return RankInfo(int(environ['RANK']), int(environ['WORLD_SIZE']), int(environ.get('LOCAL_RANK', 0)),
                        environ['MASTER_ADDR'], int(environ.get('MASTER_PORT', 29500)))
    if 'SLURM_PROCID' in environ and 'SLURM_NTASKS' in environ and int(environ['SLURM_NTASKS']) > 1:
        addr = environ.get('MASTER_ADDR') or _first_slurm_host(environ.get('SLURM_JOB_NODELIST', '127.0.0.1'))
        port = int(environ.get('MASTER_PORT', 20000 + int(environ.get('SLURM_JOB_ID', 0)) % 20000))
        return RankInfo(int(environ['SLURM_PROCID']), int(environ['SLURM_NTASKS']),
                        int(environ.get('SLURM_LOCALID', 0)), addr, port)
    return None


def device_for(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device('cuda', local_rank)
    return torch.device('cpu')

# ----------------------------------------------------------------------------


class Watchdog:
    """Heartbeats and a shared failure flag in the rendezvous store (its own client connection)."""

    def __init__(self, info: RankInfo, timeout: float):
        self.info = info
        self.timeout = timeout
        self.store = torch.distributed.TCPStore(info.master_addr, info.master_port, info.world_size,
                                                is_master=False, timeout=datetime.timedelta(seconds=max(timeout, 5)))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name='eg3d-watchdog', daemon=True)
        self._thread.start()

    def _exit(self, message: str) -> None:
        print(f'[rank {self.info.rank}] {message}; exiting', file=sys.stderr, flush=True)
        os._exit(1)

    def _run(self) -> None:
        beats = 0
        last_seen = {}  # peer -> (counter, local time it last changed)
        while not self._stop.is_set():
            try:
                beats += 1
                self.store.set(f'eg3d/heartbeat/{self.info.rank}', str(beats))
                if self.store.check(['eg3d/failed']):
                    if self._stop.is_set():
                        return
                    self._exit(f'rank {self.store.get("eg3d/failed").decode()} failed')
                now = time.monotonic()
                for peer in range(self.info.world_size):
                    if peer == self.info.rank:
                        continue
                    key = f'eg3d/heartbeat/{peer}'
                    value = self.store.get(key).decode() if self.store.check([key]) else None
                    if peer not in last_seen or last_seen[peer][0] != value:
                        last_seen[peer] = (value, now)
                    elif value is not None and now - last_seen[peer][1] > self.timeout:
                        if self.store.check(['eg3d/done']):
                            return
                        self._exit(f'rank {peer} stopped responding for {self.timeout:.0f} s')
            except Exception as err:  # The store is gone: rank 0 (its host) died.
                if self._stop.is_set():
                    return
                self._exit(f'lost the rendezvous store ({type(err).__name__}: {err})')
            self._stop.wait(HEARTBEAT_SECONDS)

    def mark_failed(self) -> None:
        try:
            self.store.set('eg3d/failed', str(self.info.rank))
        except Exception:
            pass

    def close(self, done: bool = False) -> None:
        if done:
            try:
                self.store.set('eg3d/done', '1')
            except Exception:
                pass
        self._stop.set()

# ----------------------------------------------------------------------------
# Preemption.

_stop_flag = threading.Event()


def install_stop_handlers() -> None:
    """SIGTERM / SIGUSR1 request a clean stop (state written, exit 0) instead of killing the process."""
    def handler(signum, frame):
        _stop_flag.set()
        print(f'Received {signal.Signals(signum).name}: stopping after this iteration and writing a training state',
              file=sys.stderr, flush=True)
    for sig in (signal.SIGTERM, getattr(signal, 'SIGUSR1', None)):
        if sig is not None:
            signal.signal(sig, handler)


def stop_requested() -> bool:
    return _stop_flag.is_set()


def reset_stop_request() -> None:
    _stop_flag.clear()


def agree(flag: bool, num_gpus: int, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any rank."""
    if num_gpus > 1 and torch.distributed.is_initialized():
        t = torch.tensor([1.0 if flag else 0.0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)
    return flag

# ----------------------------------------------------------------------------
# Running a function on every rank.


def run_rank(fn, info: RankInfo, kwargs: dict, heartbeat_timeout: float = 60.0) -> None:
    """Initialise the process group for `info`, run fn(rank=..., num_gpus=..., device=..., **kwargs)."""
    device = device_for(info.local_rank)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    watchdog = None
    if info.world_size > 1:
        # env:// hosts the store on rank 0, or joins torchrun's agent store when torchrun set one up.
        os.environ.update(MASTER_ADDR=info.master_addr, MASTER_PORT=str(info.master_port), RANK=str(info.rank),
                          WORLD_SIZE=str(info.world_size), LOCAL_RANK=str(info.local_rank))
        torch.distributed.init_process_group(backend, init_method='env://', rank=info.rank,
                                             world_size=info.world_size, timeout=datetime.timedelta(minutes=30))
        watchdog = Watchdog(info, heartbeat_timeout)
    install_stop_handlers()
    try:
        fn(rank=info.rank, num_gpus=info.world_size, device=device, **kwargs)
    except BaseException:
        if watchdog is not None:
            watchdog.mark_failed()
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)  # Do not wait in atexit handlers for peers that will never answer.
    if watchdog is not None:
        watchdog.close(done=True)
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def _spawned(local_rank: int, fn, nprocs: int, port: int, kwargs: dict, heartbeat_timeout: float) -> None:
    info = RankInfo(local_rank, nprocs, local_rank, '127.0.0.1', port)
    run_rank(fn, info, kwargs, heartbeat_timeout)


def launch(fn, num_gpus: int, kwargs: dict, heartbeat_timeout: float = 60.0) -> None:
    """Run fn on every rank: join a torchrun / SLURM group if one is set up, else start num_gpus local
    processes (or run in this process when num_gpus == 1)."""
    info = rank_from_env()
    if info is not None:
        if info.world_size != num_gpus:
            print(f'Note: the launcher started {info.world_size} processes; --gpus={num_gpus} is ignored',
                  file=sys.stderr)
        run_rank(fn, info, kwargs, heartbeat_timeout)
        return
    if num_gpus == 1:
        run_rank(fn, RankInfo(0, 1, 0, '127.0.0.1', 0), kwargs, heartbeat_timeout)
        return
    port = free_port()
    context = torch.multiprocessing.start_processes(_spawned, args=(fn, num_gpus, port, kwargs, heartbeat_timeout),
                                                    nprocs=num_gpus, start_method='spawn', join=False)

    def forward(signum, frame):  # A signal to the launcher reaches every rank (cluster preemption).
        for process in context.processes:
            if process.is_alive():
                os.kill(process.pid, signum)
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        while not context.join():
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
