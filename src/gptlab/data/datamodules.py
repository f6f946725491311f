"""LightningDataModules: tokenize once in ``prepare_data``, build datasets in ``setup``, serve loaders."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, RandomSampler

from gptlab.data.corpus import TokenCache, build_token_cache
from gptlab.data.datasets import TokenWindows, keep_batch
from gptlab.data.tokenizers import Tokenizer


class PretrainDataModule(L.LightningDataModule):
    """Causal-LM data: a corpus split by position into train / val (/ test) token ranges.

    Training is step-based: each "epoch" is ``steps_per_epoch`` batches of windows drawn at random
    offsets (with replacement, from a seeded generator). Validation and test use fixed non-overlapping
    windows; without a test fraction, the test stage evaluates the validation windows.
    """

    def __init__(
        self,
        path: str,
        tokenizer: Tokenizer,
        block_size: int,
        batch_size: int = 12,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        steps_per_epoch: int = 1000,
        max_eval_windows: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str = "data/.cache",
        seed: int = 1337,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be fractions that "
                "leave some text for training"
            )
        self.path = os.fspath(path)
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.steps_per_epoch = steps_per_epoch
        self.max_eval_windows = max_eval_windows
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = os.fspath(cache_dir)
        self.seed = seed
        self.datasets: dict[str, TokenWindows] = {}

    def _cache(self) -> TokenCache:
        return build_token_cache(self.path, self.tokenizer, self.cache_dir)

    def prepare_data(self) -> None:
        cache = self._cache()
        rank_zero_info(f"token cache: {cache.directory} ({cache.meta['num_tokens']:,} tokens)")

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cache = self._cache()
        self.tokenizer = cache.tokenizer()
        tokens = cache.tokens()
        n = len(tokens)
        n_test = int(n * self.test_fraction)
        n_val = int(n * self.val_fraction)
        train_end, val_end = n - n_val - n_test, n - n_test
        block = self.block_size
        try:
            self.datasets["train"] = TokenWindows(tokens, block, 0, train_end, stride=1)
            self.datasets["val"] = self._eval_windows(tokens, train_end, val_end)
            self.datasets["test"] = self._eval_windows(tokens, val_end, n) if n_test else self.datasets["val"]
        except ValueError as err:
            raise ValueError(
                f"corpus '{self.path}' has {n:,} tokens, too short for block_size={block} with "
                f"val_fraction={self.val_fraction}: {err}"
            ) from None

    def _eval_windows(self, tokens, start: int, end: int) -> TokenWindows:
        windows = TokenWindows(tokens, self.block_size, start, end, stride=self.block_size)
        if self.max_eval_windows and len(windows) > self.max_eval_windows:
            # Keep the windows evenly spaced over the split rather than only its beginning.
            stride = self.block_size * (len(windows) // self.max_eval_windows)
            windows = TokenWindows(tokens, self.block_size, start, end, stride=stride)
        return windows

    def _loader(self, dataset: TokenWindows, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = RandomSampler(
            self.datasets["train"],
            replacement=True,
            num_samples=self.steps_per_epoch * self.batch_size,
            generator=generator,
        )
        return self._loader(self.datasets["train"], sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], shuffle=False)
