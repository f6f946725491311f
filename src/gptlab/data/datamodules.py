"""The pretraining datamodule and what gptlab's datamodules share (the classification one is in
:mod:`gptlab.data.classification`): tokenize once in ``prepare_data``, build datasets in ``setup``."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from gptlab.data.cache import TokenCache, build_token_cache, find_token_cache
from gptlab.data.datasets import TokenWindows, keep_batch
from gptlab.data.documents import Preprocessing
from gptlab.data.sampling import BatchPlan, GlobalBatchSampler, ResumableDataLoader, ShardSampler
from gptlab.tokenization import Tokenizer, UnknownCharactersError


def check_split_fractions(val_fraction: float, test_fraction: float, what: str) -> None:
    """Refuse validation / test fractions that are not fractions or leave nothing to train on."""
    if not 0 < val_fraction < 1:
        raise ValueError(
            f"data.val_fraction={val_fraction}: a fraction of the {what} above 0 and below 1 is held out "
            "for validation, which the checkpoints (best by the validation metric) and early stopping "
            "need; e.g. data.val_fraction=0.1"
        )
    if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
        raise ValueError(
            f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be fractions "
            f"that leave some {what} for training"
        )


def check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(
            f"block_size={block_size}: the model reads windows of block_size tokens, 1 or more; set "
            "model.backbone.block_size (data.block_size follows it), e.g. 256"
        )


class GlobalBatchDataModule(L.LightningDataModule):
    """What gptlab's datamodules share: ``batch_size`` is the global batch (per optimizer step), cut over
    the trainer's processes and accumulation steps, and one set of DataLoader settings."""

    batch_size: int
    num_workers: int
    pin_memory: bool

    @property
    def batch_plan(self) -> BatchPlan:
        """``batch_size`` cut over the attached trainer's processes and accumulation steps."""
        return BatchPlan.from_trainer(self.batch_size, self.trainer)

    def _make_loader(
        self, dataset: Dataset, loader_class: type[DataLoader] = DataLoader, **batching: Any
    ) -> DataLoader:
        return loader_class(
            dataset,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            **batching,
        )


class PretrainDataModule(GlobalBatchDataModule):
    """Causal-LM data: a corpus split into train / val (/ test) text, plus named evaluation corpora.

    The split is cut in the text, at ``1 - val_fraction - test_fraction`` (and ``1 - test_fraction``)
    of its UTF-8 bytes (at a character boundary), before tokenizing: every tokenizer validates on
    the same text, so bits per byte compare across tokenizers. ``eval_sets`` (name -> file, directory,
    glob or list) are tokenized with the run's tokenizer, cached like the corpus and validated whole
    beside the val split (second and later validation loaders, in the order given).

    ``path`` is a file, directory, glob or a list of them (.txt, .jsonl, .csv, .tsv, optionally .gz;
    see :mod:`gptlab.data.documents` and :func:`gptlab.data.cache.build_token_cache` for ``text_field``,
    ``encoding_errors``, ``preprocessing``, ``num_proc`` and ``fit_sample_mb``). The corpus is tokenized
    once into ``cache_dir`` by ``prepare_data`` (rank 0 only under DDP); ``setup`` only reads that cache.

    Training is step-based: each "epoch" is ``steps_per_epoch`` optimizer steps, each a global batch of
    ``batch_size`` windows at distinct random offsets drawn from ``(seed, epoch)``, shared out over the
    ranks and accumulation steps (:mod:`gptlab.data.sampling`). Validation and test use fixed
    non-overlapping windows, split over the ranks without padding; without a test fraction, the test
    stage evaluates the validation windows.
    """

    def __init__(
        self,
        path: str | Sequence[str],
        tokenizer: Tokenizer,
        block_size: int,
        batch_size: int = 12,
        val_fraction: float = 0.1,
        test_fraction: float = 0.0,
        steps_per_epoch: int = 1000,
        max_eval_windows: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str = "data/.cache",
        seed: int = 1337,
        text_field: str = "text",
        encoding_errors: str = "strict",
        preprocessing: Preprocessing | dict | None = None,
        num_proc: int | None = None,
        fit_sample_mb: float | None = None,
        eval_sets: Mapping[str, str | Sequence[str]] | None = None,
    ) -> None:
        super().__init__()
        check_split_fractions(val_fraction, test_fraction, "text")
        check_block_size(block_size)
        eval_sets = dict(eval_sets or {})
        for name in eval_sets:
            if not name or "/" in name or name in ("val", "test"):
                raise ValueError(
                    f"data.eval_sets name {name!r} cannot be a metric name part: use a non-empty name "
                    "without '/' other than 'val' and 'test'"
                )
        self.path = os.fspath(path) if isinstance(path, str | os.PathLike) else [os.fspath(p) for p in path]
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.steps_per_epoch = steps_per_epoch
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(
                f"data.eval_batch_size={eval_batch_size}: windows per validation batch, 1 or more (null: "
                "the training micro-batch), e.g. data.eval_batch_size=64"
            )
        self.max_eval_windows = max_eval_windows
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.cache_dir = os.fspath(cache_dir)
        self.seed = seed
        # The tokenizer as configured keys the cache; ``self.tokenizer`` becomes the fitted one in setup.
        self.requested_tokenizer = tokenizer
        self.corpus_options = {
            "text_field": text_field,
            "encoding_errors": encoding_errors,
            "preprocessing": Preprocessing.from_any(preprocessing),
            "fit_sample_mb": fit_sample_mb,
        }
        self.eval_sets = {
            name: os.fspath(p) if isinstance(p, str | os.PathLike) else [os.fspath(q) for q in p]
            for name, p in eval_sets.items()
        }
        self.num_proc = num_proc
        self.datasets: dict[str, TokenWindows] = {}
        self._reported_cache: str | None = None

    def model_kwargs(self) -> dict[str, Any]:
        """What the model must be built with to fit this data (call after ``setup``)."""
        return {
            "vocab_size": self.tokenizer.vocab_size,
            "tokenizer": self.tokenizer,
            "eval_sets": list(self.eval_sets),
        }

    @property
    def _split(self) -> tuple[float, float]:
        return (self.val_fraction, self.test_fraction)

    @property
    def tokens_per_sample(self) -> int:
        return self.block_size

    def prepare_data(self) -> None:
        cache = build_token_cache(
            self.path, self.requested_tokenizer, self.cache_dir, num_proc=self.num_proc,
            split=self._split, **self.corpus_options,
        )  # fmt: skip
        # Evaluation corpora: encoded with the corpus's fitted tokenizer, never fitted themselves.
        tokenizer = cache.tokenizer()
        eval_caches = {}
        for name, path in self.eval_sets.items():
            try:
                eval_caches[name] = build_token_cache(
                    path, tokenizer, self.cache_dir, num_proc=self.num_proc, **self.corpus_options
                )
            except UnknownCharactersError as err:
                raise UnknownCharactersError(
                    f"data.eval_sets.{name} ('{path}'): {err} A character vocabulary knows only the "
                    "training corpus's characters; tokenizer=byte or tokenizer=bpe read any text."
                ) from None
        if str(cache.directory) == self._reported_cache:
            return  # Lightning calls prepare_data again for each stage; say it once
        self._reported_cache = str(cache.directory)
        labels = {"": cache} | {f" for data.eval_sets.{name}": entry for name, entry in eval_caches.items()}
        for label, entry in labels.items():
            meta = entry.meta
            rank_zero_info(
                f"token cache{label}: {entry.directory} ({meta['num_tokens']:,} tokens from "
                f"{meta['documents']:,} documents; {meta['dropped_documents']:,} dropped by preprocessing "
                "or empty)"
            )

    def _cache(self, path: str | list[str], tokenizer: Tokenizer, split: tuple[float, float]) -> TokenCache:
        cache = find_token_cache(path, tokenizer, self.cache_dir, split=split, **self.corpus_options)
        if not cache.complete:
            raise RuntimeError(
                f"no token cache for corpus '{path}' in '{self.cache_dir}'; call prepare_data() "
                "before setup() (Lightning's Trainer does so on rank 0)"
            )
        return cache

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cache = self._cache(self.path, self.requested_tokenizer, self._split)
        self.tokenizer = cache.tokenizer()
        tokens = cache.tokens()
        block = self.block_size
        try:
            self.datasets["train"] = TokenWindows(tokens, block, *cache.split_range("train"), stride=1)
            self.datasets["val"] = self._eval_windows(tokens, *cache.split_range("val"))
            self.datasets["test"] = (
                self._eval_windows(tokens, *cache.split_range("test"))
                if self.test_fraction
                else self.datasets["val"]
            )
        except ValueError as err:
            raise ValueError(
                f"corpus '{self.path}' has {len(tokens):,} tokens, too short for block_size={block} with "
                f"val_fraction={self.val_fraction} and test_fraction={self.test_fraction}: {err}"
            ) from None
        for name, path in self.eval_sets.items():
            entry = self._cache(path, self.tokenizer, (0.0, 0.0))
            try:
                self.datasets[name] = self._eval_windows(entry.tokens(), *entry.split_range("train"))
            except ValueError as err:
                raise ValueError(f"data.eval_sets.{name} ('{path}'): {err}") from None

    def _eval_windows(self, tokens, start: int, end: int) -> TokenWindows:
        windows = TokenWindows(tokens, self.block_size, start, end, stride=self.block_size)
        if self.max_eval_windows and len(windows) > self.max_eval_windows:
            # Keep the windows evenly spaced over the split rather than only its beginning.
            stride = self.block_size * -(-len(windows) // self.max_eval_windows)
            windows = TokenWindows(tokens, self.block_size, start, end, stride=stride)
        return windows

    def _loader(
        self, split: str, sampler: Sampler, loader_class: type[DataLoader] = DataLoader, batch_size: int = 0
    ) -> DataLoader:
        return self._make_loader(
            self.datasets[split], loader_class,
            batch_size=batch_size or self.batch_plan.micro_batch, sampler=sampler, collate_fn=keep_batch,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        plan = self.batch_plan
        sampler = GlobalBatchSampler(len(self.datasets["train"]), self.steps_per_epoch, plan, self.seed)
        return self._loader("train", sampler, ResumableDataLoader)

    def _eval_loader(self, split: str) -> DataLoader:
        plan = self.batch_plan
        sampler = ShardSampler(len(self.datasets[split]), plan.rank, plan.world_size)
        # No gradients are kept in evaluation: batches larger than training's run the model faster.
        return self._loader(split, sampler, batch_size=self.eval_batch_size or plan.micro_batch)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        if not self.eval_sets:
            return self._eval_loader("val")
        return [self._eval_loader(name) for name in ("val", *self.eval_sets)]

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if not self.eval_sets:
            return self._eval_loader("test")
        return [self._eval_loader(name) for name in ("test", *self.eval_sets)]
