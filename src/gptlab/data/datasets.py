"""``torch.utils.data`` datasets over tokenized text."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


class TokenWindows(Dataset):
    """Windows of ``block_size + 1`` tokens from a 1-D token array, as (input, target) pairs.

    Window ``i`` starts at ``start + i * stride`` and never crosses ``end``. Use ``stride=1`` with a random
    sampler for training (every offset is a possible window, as in nanoGPT) and ``stride=block_size``
    for evaluation (fixed, non-overlapping windows, so the loss is comparable across runs).
    """

    def __init__(
        self, tokens: np.ndarray, block_size: int, start: int = 0, end: int | None = None, stride: int = 1
    ) -> None:
        end = len(tokens) if end is None else end
        span = end - start
        if span < block_size + 1:
            raise ValueError(
                f"a split of {span} tokens is shorter than one window of block_size + 1 = "
                f"{block_size + 1} tokens; use more text or a smaller block_size"
            )
        self.tokens = tokens
        self.block_size = block_size
        self.start = start
        self.stride = stride
        self.num_windows = (span - block_size - 1) // stride + 1

    def __len__(self) -> int:
        return self.num_windows

    def __getstate__(self) -> dict:
        # A memmap would pickle as a full in-memory copy; send worker processes its file name instead.
        state = dict(self.__dict__)
        if isinstance(self.tokens, np.memmap):
            state["tokens"] = (self.tokens.filename, self.tokens.dtype.name, self.tokens.shape)
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["tokens"], tuple):
            filename, dtype, shape = state["tokens"]
            state["tokens"] = np.memmap(filename, dtype=dtype, mode="r", shape=shape)
        self.__dict__.update(state)

    def _gather(self, indices: Sequence[int]) -> torch.Tensor:
        length = self.block_size + 1
        offsets = [self.start + int(i) * self.stride for i in indices]
        return torch.from_numpy(np.stack([self.tokens[o : o + length] for o in offsets]).astype(np.int64))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_windows:
            raise IndexError(f"window {index} out of range for {self.num_windows} windows")
        window = self._gather([index])[0]
        return window[:-1], window[1:]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One numpy gather per batch instead of one tensor per window; pair with `keep_batch`.
        windows = self._gather(indices)
        return windows[:, :-1], windows[:, 1:]


def keep_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Collate for datasets whose ``__getitems__`` already returns a stacked batch."""
    return batch
