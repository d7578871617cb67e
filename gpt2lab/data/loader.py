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

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .shards import split_shards


class Windows:
    """All (seq_len + 1)-token windows of one split.

    By default window i of a shard starts at token i * seq_len. With align_documents, windows instead tile
    each document from its <|endoftext|>: at the document's start, then every seq_len tokens while they still
    start inside it (the last may run into the next document's beginning).
    """

    def __init__(self, data_dir: str, split: str, seq_len: int, align_documents: bool = False, eot: int | None = None,
                 max_token: int | None = None):
        self.seq_len, self.max_token, self.split = seq_len, max_token, split
        self.shards = split_shards(data_dir, split)
        self.total_tokens = sum(len(s) for s in self.shards)
        if align_documents:
            if eot is None:
                raise UserError(f"data.align_documents is on, but {data_dir}'s meta.json names no end-of-text token "
                                "(tokenizer.eot); turn it off (--set data.align_documents=false) or prepare the data "
                                "with a tokenizer that has one")
            self.offsets = [_document_starts(s, eot, seq_len) for s in self.shards]
        else:
            self.offsets = [np.arange(max(0, (len(s) - 1) // seq_len), dtype=np.int64) * seq_len for s in self.shards]
        counts = np.array([len(o) for o in self.offsets], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(counts)])  # first window index of each shard
        if self.starts[-1] == 0:
            raise UserError(
                f"the {split!r} split of {data_dir} has {self.total_tokens} tokens, too few for one window of "
                f"{seq_len + 1}; use a shorter context (--set data.seq_len=N) or more data"
            )

    def __len__(self) -> int:
        return int(self.starts[-1])

    def reach(self) -> float:
        """The share of the split's tokens that some window holds. A window never spans two shards, so each
        shard's tail shorter than a window is never read: nothing at the default shard size (100M tokens), but
        most of the data when shards were prepared not much longer than a window."""
        held = 0
        for offsets in self.offsets:
            if len(offsets):  # windows overlap by a token (or more when aligned to documents): count each once
                held += int(np.minimum(np.diff(offsets), self.seq_len + 1).sum()) + self.seq_len + 1
        return held / max(1, self.total_tokens)

    def reach_note(self) -> str | None:
        """A warning when windows leave more than 5% of the split unread (shards too short for the context)."""
        reach = self.reach()
        if reach >= 0.95:
            return None
        mean = self.total_tokens // len(self.shards)
        return (f"windows of {self.seq_len + 1} tokens reach only {reach:.0%} of the {self.split} split: its "
                f"{len(self.shards):,} shards hold {mean:,} tokens each on average, and a window never spans two "
                f"shards; prepare the data again with a larger --shard-tokens (the default is 100,000,000)")

    def tokens(self, indices: np.ndarray) -> np.ndarray:
        """Windows by index, as an int64 array (len(indices), seq_len + 1)."""
        shard_of = np.searchsorted(self.starts, indices, side="right") - 1
        out = np.empty((len(indices), self.seq_len + 1), dtype=np.int64)
        for row, (s, i) in enumerate(zip(shard_of, indices)):
            begin = int(self.offsets[s][int(i) - int(self.starts[s])])
            out[row] = self.shards[s][begin : begin + self.seq_len + 1]
        if self.max_token is not None and out.size and int(out.max()) >= self.max_token:
            s = int(shard_of[int(np.argmax(out.max(axis=1)))])
            raise UserError(f"the {self.split} data holds token id {int(out.max())}, but model.vocab_size is {self.max_token} "
                            f"(shard {Path(self.shards[s].filename).name}); the data was prepared with another tokenizer "
                            "or a shard is damaged: prepare it again, or raise model.vocab_size")
        return out


def _document_starts(shard: np.ndarray, eot: int, seq_len: int) -> np.ndarray:
    """Window starts that tile every document of a shard from its <|endoftext|>."""
    n = len(shard)
    docs = np.flatnonzero(np.asarray(shard) == eot)
    if len(docs) == 0 or docs[0] != 0:
        docs = np.concatenate([[0], docs])
    ends = np.append(docs[1:], n)
    starts = [np.arange(b, e, seq_len) for b, e in zip(docs, ends)]
    starts = np.concatenate(starts) if starts else np.empty(0, dtype=np.int64)
    return starts[starts + seq_len + 1 <= n].astype(np.int64)


def document_ids(x: torch.Tensor, eot: int) -> torch.Tensor:
    """For each position, which document of the window it is in (each <|endoftext|> begins a new one)."""
    return (x == eot).cumsum(dim=1)


def to_device(windows: np.ndarray | torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(windows) if isinstance(windows, np.ndarray) else windows
    if device.type == "cuda":
        t = (t if t.is_pinned() else t.pin_memory()).to(device, non_blocking=True)
    return t[:, :-1], t[:, 1:]


class BatchStream:
    """Shuffled training micro-batches; state_dict() is everything needed to continue exactly.

    With prefetch > 0 a background thread gathers that many micro-batches ahead (into pinned memory when the
    batches go to a GPU). The saved position is always that of the batches handed out, not of those fetched.
    """

    def __init__(self, windows: Windows, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, prefetch: int = 0):
        self.windows, self.batch_size, self.seed = windows, batch_size, seed
        self.rank, self.world_size, self.prefetch = rank, world_size, prefetch
        self.position = 0  # windows of the stream consumed by all ranks together
        self._perm_epoch, self._perm = -1, None
        self._thread, self._queue, self._stop = None, None, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))
            self._perm_epoch = epoch
        return self._perm

    @property
    def epoch(self) -> int:
        return self.position // len(self.windows)

    @property
    def step_windows(self) -> int:
        return self.batch_size * self.world_size

    def indices_at(self, position: int) -> np.ndarray:
        """This rank's window indices for the global micro-batch that starts at `position` of the stream."""
        n = len(self.windows)
        first = position + self.rank * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        out = np.empty(self.batch_size, dtype=np.int64)
        epochs = positions // n
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._permutation(int(epoch))[positions[mask] % n]
        return out

    def next_indices(self) -> np.ndarray:
        """The next micro-batch's indices for this rank (synchronously); advances the stream."""
        out = self.indices_at(self.position)
        self.position += self.step_windows
        return out

    def next_batch(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.prefetch:
            return to_device(self.windows.tokens(self.next_indices()), device)
        if self._thread is None:
            self._start(device.type == "cuda")
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        self.position += self.step_windows
        return to_device(item, device)

    def _start(self, pin: bool) -> None:
        import queue
        import threading

        self._queue, self._stop = queue.Queue(maxsize=self.prefetch), threading.Event()
        # the thread keeps its own permutation cache: the two threads never share one
        ahead = BatchStream(self.windows, self.batch_size, self.seed, self.rank, self.world_size)
        ahead.position = self.position

        def work():
            try:
                while not self._stop.is_set():
                    batch = torch.from_numpy(self.windows.tokens(ahead.next_indices()))
                    item = batch.pin_memory() if pin else batch
                    while not self._stop.is_set():
                        try:
                            self._queue.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as exc:  # handed to the consumer
                self._queue.put(exc)

        self._thread = threading.Thread(target=work, daemon=True, name="batch-prefetch")
        self._thread.start()

    def close(self) -> None:
        """Stop the prefetch thread; the next batch starts it again at the current position."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = self._queue = None

    def state_dict(self) -> dict:
        return {"position": self.position, "seed": self.seed, "windows": len(self.windows)}

    def load_state_dict(self, state: dict) -> None:
        if state["windows"] != len(self.windows):
            raise UserError(
                f"the checkpoint's data had {state['windows']} windows but this data has {len(self.windows)}; "
                "resume with the same data directory, context length and window alignment"
            )
        self.close()
        self.seed, self.position = state["seed"], state["position"]

