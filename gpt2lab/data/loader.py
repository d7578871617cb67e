"""Batches of (x, y) windows from memory-mapped shards.

A window is seq_len + 1 consecutive tokens of one shard; x is its first seq_len tokens and y the last seq_len.
Window i of a shard starts at token i * seq_len, so windows never overlap except for the one token that is
both the last target of a window and the first input of the next.

Training order is a stream: epoch e is a permutation of all windows seeded by (seed, e), and the epochs are
laid end to end. A micro-step takes the next batch_size * world_size windows of the stream; rank r keeps its
own batch_size of them. The whole loader state is the stream position, so resuming is exact, the global batch
does not depend on the number of processes, and every window is seen exactly once per epoch.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError
from .shards import split_shards


class Windows:
    """All (seq_len + 1)-token windows of one split."""

    def __init__(self, data_dir: str, split: str, seq_len: int):
        self.seq_len = seq_len
        self.shards = split_shards(data_dir, split)
        counts = np.array([max(0, (len(s) - 1) // seq_len) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # first window index of each shard
        if self.starts[-1] == 0:
            tokens = sum(len(s) for s in self.shards)
            raise UserError(
                f"the {split!r} split of {data_dir} has {tokens} tokens, too few for one window of "
                f"{seq_len + 1}; use a shorter context (--set data.seq_len=N) or more data"
            )

    def __len__(self) -> int:
        return int(self.starts[-1])

    def tokens(self, indices: np.ndarray) -> np.ndarray:
        """Windows by index, as an int64 array (len(indices), seq_len + 1)."""
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for row, (s, i) in enumerate(zip(shard_of, indices)):
            begin = (int(i) - int(self.starts[s])) * self.seq_len
            out[row] = self.shards[s][begin : begin + self.seq_len + 1]
        return out


def to_device(windows: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(windows)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


class BatchStream:
    """Shuffled training micro-batches; state_dict() is everything needed to continue exactly."""

    def __init__(self, windows: Windows, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.windows, self.batch_size, self.seed = windows, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.position = 0  # windows of the stream consumed by all ranks together
        self._perm_epoch, self._perm = -1, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))
            self._perm_epoch = epoch
        return self._perm

    @property
    def epoch(self) -> int:
        return self.position // len(self.windows)

    def next_indices(self) -> np.ndarray:
        """This rank's window indices for the next micro-step; advances the stream by one global micro-batch."""
        n = len(self.windows)
        first = self.position + self.rank * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        self.position += self.batch_size * self.world_size
        out = np.empty(self.batch_size, dtype=np.int64)
        epochs = positions // n
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._permutation(int(epoch))[positions[mask] % n]
        return out

    def next_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device(self.windows.tokens(self.next_indices()), device)

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "windows": len(self.windows)}

    def load_state_dict(self, state: dict) -> None:
        if state["windows"] != len(self.windows):
            raise UserError(
                f"the checkpoint's data had {state['windows']} windows but this data has {len(self.windows)}; "
                "resume with the same data directory and context length"
            )
        self.seed, self.position = state["seed"], state["position"]


def eval_batches(windows: Windows, batch_size: int, max_batches: int = 0):
    """Validation windows in order, batch by batch; max_batches 0 means all of them."""
    n = len(windows)
    stop = n if not max_batches else min(n, max_batches * batch_size)
    for begin in range(0, stop, batch_size):
        yield windows.tokens(np.arange(begin, min(begin + batch_size, stop)))
