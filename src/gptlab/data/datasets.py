"""``torch.utils.data`` datasets over tokenized text."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from gptlab.tokenization import Tokenizer, UnknownCharactersError


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
        self._positions = np.arange(block_size + 1)

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
        offsets = self.start + np.asarray(indices, dtype=np.int64) * self.stride
        # One fancy-indexing read on a plain ndarray view: slicing the memmap window by window built a
        # memmap object per window, which was slower (benchmarks/MEASUREMENTS.md, section 4).
        windows = np.asarray(self.tokens)[offsets[:, None] + self._positions]
        return torch.from_numpy(windows.astype(np.int64))

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


TRUNCATIONS = ("head", "tail")
UNKNOWN_CHARS = ("error", "drop")


def describe_dropped(dropped: Counter, num_chars: int, shown: int = 8) -> str:
    """How many characters were dropped, their share of ``num_chars``, and the most frequent of them."""
    total = sum(dropped.values())
    top = ", ".join(f"{ch!r} {n:,}" for ch, n in dropped.most_common(shown))
    more = f" and {len(dropped) - shown} more" if len(dropped) > shown else ""
    return (
        f"{total:,} characters ({total / max(num_chars, 1):.2%} of {num_chars:,}) are not in the "
        f"tokenizer's vocabulary; the most frequent: {top}{more}"
    )


def encode_texts(
    texts: Sequence[str],
    tokenizer: Tokenizer,
    max_length: int,
    truncation: str = "head",
    unknown_chars: str = "error",
) -> tuple[list[list[int]], Counter]:
    """Token ids of each text, cut to ``max_length`` tokens, and the characters dropped (with counts).

    ``truncation="head"`` keeps the beginning of a long text, ``"tail"`` its end. A character-level
    vocabulary cannot encode characters it never saw (a pretraining corpus rarely has them all):
    ``unknown_chars="drop"`` removes them, ``"error"`` refuses the text.
    """
    if truncation not in TRUNCATIONS:
        raise ValueError(f"unknown truncation {truncation!r}; use one of {TRUNCATIONS}")
    if unknown_chars not in UNKNOWN_CHARS:
        raise ValueError(f"unknown unknown_chars {unknown_chars!r}; use one of {UNKNOWN_CHARS}")
    try:
        encoded = tokenizer.encode_batch(texts)
        dropped = Counter()
    except UnknownCharactersError as err:
        if unknown_chars == "error":
            raise UnknownCharactersError(f"{err} Or set data.unknown_chars=drop to drop them.") from None
        encoded, dropped = _encode_dropping_unknown(texts, tokenizer)
    if truncation == "head":
        return [ids[:max_length] for ids in encoded], dropped
    return [ids[-max_length:] for ids in encoded], dropped


def _encode_dropping_unknown(texts: Sequence[str], tokenizer: Tokenizer) -> tuple[list[list[int]], Counter]:
    known: dict[str, bool] = {}

    def is_known(ch: str) -> bool:
        if ch not in known:
            try:
                tokenizer.encode(ch)
                known[ch] = True
            except UnknownCharactersError:
                known[ch] = False
        return known[ch]

    encoded, dropped = [], Counter()
    for text in texts:
        kept = "".join(ch for ch in text if is_known(ch))
        if len(kept) < len(text):
            dropped.update(ch for ch in text if not known[ch])
        encoded.append(tokenizer.encode(kept))
    return encoded, dropped


class TextClassificationDataset(Dataset):
    """Texts, and optionally their labels, tokenized once and cut to ``max_length`` tokens.

    Labels are class ids, or names when ``label_names`` (the id order) is given. Items are
    ``{"input_ids": (T,) tensor, "label": int}`` (no label when there are none): batch them with
    :func:`pad_collate`.
    """

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[int | str] | None = None,
        *,
        tokenizer: Tokenizer,
        max_length: int,
        label_names: Sequence[str] | None = None,
        truncation: str = "head",
        unknown_chars: str = "error",
    ) -> None:
        if labels is not None and len(labels) != len(texts):
            raise ValueError(f"got {len(texts)} texts but {len(labels)} labels; give one label per text")
        self.ids, self.dropped = encode_texts(texts, tokenizer, max_length, truncation, unknown_chars)
        self.dropped_chars = sum(self.dropped.values())
        self.num_chars = sum(len(text) for text in texts)
        empty = [i for i, ids in enumerate(self.ids) if not ids]
        if empty:
            raise ValueError(
                f"{len(empty)} text(s) have no tokens (e.g. text {empty[0]}: {texts[empty[0]]!r}); "
                "remove empty texts before building the dataset"
            )
        self.labels = None if labels is None else _label_ids(labels, label_names)
        self.lengths = [len(ids) for ids in self.ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        item: dict = {"input_ids": torch.tensor(self.ids[index], dtype=torch.long)}
        if self.labels is not None:
            item["label"] = self.labels[index]
        return item


def _label_ids(labels: Sequence[int | str], label_names: Sequence[str] | None) -> list[int]:
    if label_names is None:
        if not all(isinstance(label, int) for label in labels):
            raise ValueError("labels are names, not class ids: pass label_names to map them to ids")
        return list(labels)
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({str(label) for label in labels if label not in index})
    if unknown:
        raise ValueError(f"labels {unknown} are not among label_names {list(label_names)}")
    return [index[label] for label in labels]


def pad_collate(items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Pad token ids on the right to the batch's longest text.

    Returns ``input_ids`` (B, T), ``attention_mask`` (B, T, true on real tokens) and, when the items have
    labels, ``labels`` (B,). The pad id is 0: padded positions are masked, so its value never matters.
    """
    longest = max(len(item["input_ids"]) for item in items)
    input_ids = torch.zeros(len(items), longest, dtype=torch.long)
    attention_mask = torch.zeros(len(items), longest, dtype=torch.bool)
    for row, item in enumerate(items):
        length = len(item["input_ids"])
        input_ids[row, :length] = item["input_ids"]
        attention_mask[row, :length] = True
    batch = {"input_ids": input_ids, "attention_mask": attention_mask}
    if "label" in items[0]:
        batch["labels"] = torch.tensor([item["label"] for item in items], dtype=torch.long)
    return batch
