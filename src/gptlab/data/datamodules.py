"""LightningDataModules: tokenize once in ``prepare_data``, build datasets in ``setup``, serve loaders."""

from __future__ import annotations

import os
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset, Sampler

from gptlab.data.corpus import Preprocessing, TokenCache, build_token_cache, find_token_cache
from gptlab.data.datasets import (
    TextClassificationDataset,
    TokenWindows,
    keep_batch,
    pad_collate,
)
from gptlab.data.readers import CorpusFormatError, expand_paths, iter_records
from gptlab.data.sampling import (
    BatchPlan,
    BucketBatchSampler,
    GlobalBatchSampler,
    ResumableDataLoader,
    ShardSampler,
)
from gptlab.tokenization import Tokenizer


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
    """Causal-LM data: a corpus split by position into train / val (/ test) token ranges.

    ``path`` is a file, directory, glob or a list of them (.txt, .jsonl, .csv, .tsv, optionally .gz;
    see :mod:`gptlab.data.corpus` for ``text_field``, ``encoding_errors``, ``preprocessing``,
    ``num_proc`` and ``fit_sample_mb``). The corpus is tokenized once into ``cache_dir`` by
    ``prepare_data`` (rank 0 only under DDP); ``setup`` only reads that cache.

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
        num_workers: int = 0,
        pin_memory: bool = False,
        cache_dir: str = "data/.cache",
        seed: int = 1337,
        text_field: str = "text",
        encoding_errors: str = "strict",
        preprocessing: Preprocessing | dict | None = None,
        num_proc: int | None = None,
        fit_sample_mb: float | None = None,
    ) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(
                f"data.val_fraction={val_fraction}: a fraction of the corpus above 0 and below 1 is held out "
                "for validation, which the checkpoints (best by val/loss) and early stopping need; "
                "e.g. data.val_fraction=0.05"
            )
        if not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                "fractions that leave some text for training"
            )
        check_block_size(block_size)
        self.path = os.fspath(path) if isinstance(path, str | os.PathLike) else [os.fspath(p) for p in path]
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
        # The tokenizer as configured keys the cache; ``self.tokenizer`` becomes the fitted one in setup.
        self.requested_tokenizer = tokenizer
        self.corpus_options = {
            "text_field": text_field,
            "encoding_errors": encoding_errors,
            "preprocessing": Preprocessing.from_any(preprocessing),
            "fit_sample_mb": fit_sample_mb,
        }
        self.num_proc = num_proc
        self.datasets: dict[str, TokenWindows] = {}
        self._reported_cache: str | None = None

    def model_kwargs(self) -> dict[str, Any]:
        """What the model must be built with to fit this data (call after ``setup``)."""
        return {"vocab_size": self.tokenizer.vocab_size, "tokenizer": self.tokenizer}

    @property
    def tokens_per_sample(self) -> int:
        return self.block_size

    def prepare_data(self) -> None:
        cache = build_token_cache(
            self.path, self.requested_tokenizer, self.cache_dir, num_proc=self.num_proc, **self.corpus_options
        )
        if str(cache.directory) == self._reported_cache:
            return  # Lightning calls prepare_data again for each stage; say it once
        self._reported_cache = str(cache.directory)
        meta = cache.meta
        rank_zero_info(
            f"token cache: {cache.directory} ({meta['num_tokens']:,} tokens from {meta['documents']:,} "
            f"documents; {meta['dropped_documents']:,} dropped by preprocessing or empty)"
        )

    def _cache(self) -> TokenCache:
        cache = find_token_cache(self.path, self.requested_tokenizer, self.cache_dir, **self.corpus_options)
        if not cache.complete:
            raise RuntimeError(
                f"no token cache for corpus '{self.path}' in '{self.cache_dir}'; call prepare_data() "
                "before setup() (Lightning's Trainer does so on rank 0)"
            )
        return cache

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

    def _loader(
        self, split: str, sampler: Sampler, loader_class: type[DataLoader] = DataLoader
    ) -> DataLoader:
        return self._make_loader(
            self.datasets[split], loader_class,
            batch_size=self.batch_plan.micro_batch, sampler=sampler, collate_fn=keep_batch,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        plan = self.batch_plan
        sampler = GlobalBatchSampler(len(self.datasets["train"]), self.steps_per_epoch, plan, self.seed)
        return self._loader("train", sampler, ResumableDataLoader)

    def _eval_loader(self, split: str) -> DataLoader:
        plan = self.batch_plan
        return self._loader(split, ShardSampler(len(self.datasets[split]), plan.rank, plan.world_size))

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")


EMPTY_TEXT = ("skip", "error")
SPLITS = ("train", "val", "test")


class ClassificationDataModule(GlobalBatchDataModule):
    """Texts with labels from CSV, TSV or JSONL files (optionally .gz; any of them a directory or glob).

    Give ``train_path`` and ``val_path`` (and ``test_path``), or one ``path`` that is split into train /
    val / test by fractions, stratified by label, with ``split_seed``. Without a test split, the test stage
    evaluates the validation split. Label names are sorted and their order fixes the class ids, unless
    ``label_names`` is given (a checkpoint's, when evaluating it). A tokenizer that still needs fitting
    is fitted on the training texts. Texts are cut to ``block_size`` tokens (``truncation``: keep the
    ``head`` or the ``tail``); characters the tokenizer cannot encode (a character vocabulary fitted on
    the training texts may lack some in val / test) are dropped and counted, or refused with
    ``unknown_chars="error"``. Batches are padded per batch, and with ``bucket_by_length`` hold texts of
    similar length; ``seed`` and the epoch draw their order. ``batch_size`` is the global batch, shared out
    over ranks and accumulation steps like the pretraining data's (:mod:`gptlab.data.sampling`).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        block_size: int,
        path: str | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        text_field: str = "text",
        label_field: str = "label",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 1337,
        label_names: Sequence[str] | None = None,
        truncation: str = "head",
        empty_text: str = "skip",
        unknown_chars: str = "drop",
        encoding_errors: str = "strict",
        batch_size: int = 32,
        bucket_by_length: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 1337,
    ) -> None:
        super().__init__()
        split_paths = {"train": train_path, "val": val_path, "test": test_path}
        if (path is None) == all(p is None for p in split_paths.values()):
            raise ValueError(
                "give either data.path (one file, split by fractions) or data.train_path and "
                "data.val_path (and optionally data.test_path), not both and not neither"
            )
        if path is None and train_path is None and label_names is None:
            raise ValueError("data.train_path is needed: the label names are learned from it")
        if path is not None and not 0 < val_fraction < 1:
            raise ValueError(
                f"data.val_fraction={val_fraction}: a fraction of the rows above 0 and below 1 is held out "
                "for validation, which the checkpoints and early stopping need; e.g. data.val_fraction=0.1 "
                "(or give data.train_path and data.val_path instead of data.path)"
            )
        if path is not None and (not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1):
            raise ValueError(
                f"data.val_fraction={val_fraction} and data.test_fraction={test_fraction} must be "
                "fractions that leave some rows for training"
            )
        check_block_size(block_size)
        if empty_text not in EMPTY_TEXT:
            raise ValueError(f"unknown empty_text {empty_text!r}; use one of {EMPTY_TEXT}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.path = path
        self.split_paths = split_paths
        self.fields = (text_field, label_field)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.seed = seed
        self.label_names = None if label_names is None else list(label_names)
        self.truncation = truncation
        self.empty_text = empty_text
        self.unknown_chars = unknown_chars
        self.encoding_errors = encoding_errors
        self.batch_size = batch_size
        self.bucket_by_length = bucket_by_length
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, TextClassificationDataset] = {}

    def model_kwargs(self) -> dict[str, Any]:
        """What the model must be built with to fit this data (call after ``setup``)."""
        return {
            "vocab_size": self.tokenizer.vocab_size,
            "tokenizer": self.tokenizer,
            "label_names": self.label_names,
        }

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        splits = self._read_splits()
        if "train" in splits:
            train_labels = set(splits["train"][1])
            if len(train_labels) < 2:
                raise ValueError(
                    f"the training set has a single class {sorted(train_labels)}; a classifier needs "
                    "rows of at least two labels"
                )
            if self.label_names is None:
                self.label_names = sorted(train_labels)
        known = set(self.label_names)
        for name, (_, labels) in splits.items():
            unseen = sorted(set(labels) - known)
            if unseen:
                where = "the label set" if name == "train" else "train"
                raise ValueError(
                    f"labels {unseen} appear in the {name} split but never in {where} "
                    f"({len(known)} labels: {sorted(known)}); a classifier cannot learn them: add "
                    "training rows with these labels, or remove these rows"
                )
        if self.tokenizer.needs_fit:
            if "train" not in splits:
                raise ValueError("the tokenizer must be fitted on training texts: set data.train_path")
            self.tokenizer.fit(splits["train"][0])
        dropped = 0
        for name, (texts, labels) in splits.items():
            self.datasets[name] = TextClassificationDataset(
                texts,
                labels,
                tokenizer=self.tokenizer,
                max_length=self.block_size,
                label_names=self.label_names,
                truncation=self.truncation,
                unknown_chars=self.unknown_chars,
            )
            dropped += self.datasets[name].dropped_chars
        if dropped:
            rank_zero_info(f"dropped {dropped:,} characters the tokenizer's vocabulary does not have")
        if "test" not in self.datasets and "val" in self.datasets:
            self.datasets["test"] = self.datasets["val"]
        sizes = ", ".join(f"{name} {len(d):,}" for name, d in self.datasets.items())
        rank_zero_info(f"classification data: {len(self.label_names)} labels; rows: {sizes}")

    def _read_splits(self) -> dict[str, tuple[list[str], list[str]]]:
        if self.path is None:
            return {name: self._read(path) for name, path in self.split_paths.items() if path is not None}
        texts, labels = self._read(self.path)
        indices = stratified_split(labels, self.val_fraction, self.test_fraction, self.split_seed)
        if not indices["val"]:
            counts = ", ".join(f"{label!r}: {labels.count(label)}" for label in sorted(set(labels)))
            raise ValueError(
                f"'{self.path}' has too few rows per label ({counts}) for data.val_fraction="
                f"{self.val_fraction} to hold any out for validation (each label keeps a rounded share, "
                "and at least one training row); add rows, raise data.val_fraction, or give "
                "data.train_path and data.val_path"
            )
        return {
            name: ([texts[i] for i in rows], [labels[i] for i in rows])
            for name, rows in indices.items()
            if rows
        }

    def _read(self, path: str) -> tuple[list[str], list[str]]:
        texts, labels = [], []
        text_field, label_field = self.fields
        skipped: list[tuple[str, int]] = []
        for file in expand_paths(path):
            for line, record in iter_records(file, self.fields, errors=self.encoding_errors):
                text, label = record[text_field], record[label_field]
                if label is None or not label.strip() or label.strip().lower() == "nan":
                    raise CorpusFormatError(
                        f"'{file}' line {line} has an empty label ({label!r}); fill in its "
                        f"{label_field!r} or remove the row"
                    )
                if text is None or not text.strip():
                    if self.empty_text == "error":
                        raise CorpusFormatError(
                            f"'{file}' line {line} has an empty text; remove the row, or set "
                            "data.empty_text=skip to skip such rows"
                        )
                    skipped.append((str(file), line))
                    continue
                texts.append(text)
                labels.append(label.strip())
        if skipped:
            rank_zero_info(
                f"skipped {len(skipped)} row(s) with an empty text in '{path}' (the first: '{skipped[0][0]}' "
                f"line {skipped[0][1]}); set data.empty_text=error to refuse them"
            )
        if not texts:
            raise CorpusFormatError(f"'{path}' holds no rows with a text and a label")
        return texts, labels

    @property
    def tokens_per_sample(self) -> None:
        return None  # texts vary in length

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(f"there is no {split} split: set data.{split}_path, or data.path to split")
        dataset = self.datasets[split]
        sampler = BucketBatchSampler(
            dataset.lengths, self.batch_plan, shuffle=shuffle, seed=self.seed, bucket=self.bucket_by_length
        )
        loader_class = ResumableDataLoader if shuffle else DataLoader
        return self._make_loader(dataset, loader_class, batch_sampler=sampler, collate_fn=pad_collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def check_block_size(block_size: int) -> None:
    if block_size < 1:
        raise ValueError(
            f"block_size={block_size}: the model reads windows of block_size tokens, 1 or more; set "
            "model.backbone.block_size (data.block_size follows it), e.g. 256"
        )


def stratified_split(
    labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Row indices of train / val / test, each label split by the same fractions (rounded, at least one
    training row per label), shuffled with ``seed``; each split keeps the rows' original order."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    splits: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        n_val = min(round(len(rows) * val_fraction), len(rows) - 1)
        n_test = min(round(len(rows) * test_fraction), len(rows) - 1 - n_val)
        splits["val"].extend(rows[:n_val])
        splits["test"].extend(rows[n_val : n_val + n_test])
        splits["train"].extend(rows[n_val + n_test :])
    return {name: sorted(rows) for name, rows in splits.items()}
