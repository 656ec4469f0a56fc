"""InfiniteSampler: an endless, seeded, rank-aware stream of dataset indices with a windowed shuffle.

The stream is one global sequence shared by all ranks; rank r takes the positions p with
(p // block_size) % num_replicas == r (block_size 1: interleaved, as upstream; the training loop uses
its per-rank batch so that each rank's share of a global batch is contiguous, and one process with
gradient accumulation sees exactly what several ranks see). The sequence walks over a seeded permutation of the dataset; after yielding the
item at slot i it swaps that slot with a random slot among the `window` slots ending at i (never
wrapping round past slot 0). Each pass (n consecutive positions from a multiple of n) therefore
yields every item exactly once, so the ranks see disjoint items within a pass and together the whole
dataset, while the order keeps changing from pass to pass (no fixed epoch order). This is upstream's
windowed shuffle, except that upstream's swaps wrap round, which can show an item twice in one pass.

Resuming: `start_idx` is a global position. A training state that stores cur_nimg (real images taken
from the loader, summed over ranks) resumes exactly with start_idx=cur_nimg, provided the seed,
num_replicas, window and dataset (length, max_size, xflip) are the same.
"""

from __future__ import annotations

import numpy as np
import torch


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless index stream for one rank; deterministic per seed; resumable at a global position."""

    def __init__(self,
        dataset,                    # Anything with len(); only its length is used.
        rank:         int = 0,      # This process's rank in [0, num_replicas).
        num_replicas: int = 1,      # Number of ranks sharing the stream.
        shuffle:      bool = True,  # False: 0, 1, 2, ... repeated.
        seed:         int = 0,      # Seed of the permutation and of the window swaps.
        window_size:  float = 0.5,  # Swap window as a fraction of the dataset length (0 = fixed order).
        start_idx:    int = 0,      # Global position to start from (cur_nimg when resuming).
        block_size:   int = 1,      # Ranks take blocks of this many consecutive positions in turn (1 = interleaved).
    ):
        if len(dataset) <= 0:
            raise ValueError('InfiniteSampler: the dataset is empty')
        if not 0 <= rank < num_replicas:
            raise ValueError(f'InfiniteSampler: rank {rank} is not in [0, {num_replicas})')
        if not 0 <= window_size <= 1:
            raise ValueError(f'InfiniteSampler: window_size {window_size} is not in [0, 1]')
        if start_idx < 0:
            raise ValueError(f'InfiniteSampler: start_idx {start_idx} is negative')
        super().__init__()
        self.size = len(dataset)
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size
        self.start_idx = int(start_idx)
        if block_size < 1:
            raise ValueError(f'InfiniteSampler: block_size {block_size} must be >= 1')
        self.block_size = int(block_size)

    def __iter__(self):
        n = self.size
        rng = np.random.default_rng(self.seed)
        order = (rng.permutation(n) if self.shuffle else np.arange(n)).tolist()
        window = int(round(n * self.window_size)) if self.shuffle else 0
        mixing = window >= 2

        def new_offsets():  # One draw per slot at the start of every pass: slot i swaps with i - offset.
            if not mixing:
                return None
            reach = np.minimum(window, np.arange(1, n + 1))
            return np.floor(rng.random(n) * reach).astype(np.int64).tolist()

        # Fast-forward whole passes and then the part of a pass before start_idx (no yields).
        pos = 0
        for _ in range(self.start_idx // n):
            _mix(order, new_offsets(), 0, n)
            pos += n
        offsets = new_offsets()
        _mix(order, offsets, 0, self.start_idx - pos)
        pos = self.start_idx

        while True:
            i = pos % n
            if i == 0 and pos != self.start_idx:
                offsets = new_offsets()
            if (pos // self.block_size) % self.num_replicas == self.rank:
                yield order[i]
            if mixing:
                j = i - offsets[i]
                order[i], order[j] = order[j], order[i]
            pos += 1


def _mix(order: list, offsets: list | None, begin: int, end: int) -> None:
    """Apply the window swaps of slots [begin, end) of one pass to `order`, in place."""
    if offsets is None:
        return
    for i in range(begin, end):
        j = i - offsets[i]
        order[i], order[j] = order[j], order[i]
