"""The classification datamodule: labelled texts read, split by label, tokenized and padded per batch."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from gptlab.data.datamodules import GlobalBatchDataModule, check_block_size, check_split_fractions
from gptlab.data.datasets import UNKNOWN_CHARS as DATASET_UNKNOWN_CHARS
from gptlab.data.datasets import TextClassificationDataset, describe_dropped, pad_collate
from gptlab.data.documents import SPLITS
from gptlab.data.readers import CorpusFormatError, expand_paths, iter_records
from gptlab.data.sampling import BucketBatchSampler, ResumableDataLoader
from gptlab.tokenization import Tokenizer, UnknownCharactersError
from gptlab.tokenization.words import WordPreprocessing

EMPTY_TEXT = ("skip", "error")
# drop_rare: drop what a vocabulary lacks while it is at most RARE_UNKNOWN_SHARE of the training text
UNKNOWN_CHARS = (*DATASET_UNKNOWN_CHARS, "drop_rare")
RARE_UNKNOWN_SHARE = 0.005


class ClassificationDataModule(GlobalBatchDataModule):
    """Texts with labels from CSV, TSV or JSONL files (optionally .gz; any of them a directory or glob).

    Give ``train_path`` and ``val_path`` (and ``test_path``), or one ``path`` that is split into train /
    val / test by fractions, stratified by label, with ``split_seed``. Without a test split, the test stage
    evaluates the validation split. ``num_folds`` = k turns on stratified k-fold cross-validation: the
    rows that are not test (the train and val splits, or files) are cut into k folds by label with
    ``split_seed``, and fold ``fold`` (0 .. k-1) is the validation split while the others train; the test
    split (``test_path``, or the ``test_fraction`` of ``path``) stays the same for every fold.
    ``preprocessing`` (:class:`~gptlab.tokenization.words.WordPreprocessing`: word splitting, jieba for
    Chinese, stopwords, lowercase) is applied to every text as it is read; the model keeps it. Label
    names are sorted and their order fixes the class ids, unless ``label_names`` is given (a
    checkpoint's, when evaluating it). A tokenizer that still needs fitting is fitted on the training
    texts. Texts are cut to ``block_size`` tokens (``truncation``: keep the
    ``head`` or the ``tail``); characters the tokenizer cannot encode (a character vocabulary fitted on
    the training texts may lack some in val / test, a pretrained one digits or symbols) are dropped and
    reported with ``unknown_chars="drop"``, refused with ``"error"``, and with ``"drop_rare"`` dropped
    unless they exceed ``RARE_UNKNOWN_SHARE`` of the training text, where the run stops. Batches are
    padded per batch, and with ``bucket_by_length`` hold texts of similar length; ``seed`` and the epoch
    draw their order. ``batch_size`` is the global batch, shared out over ranks and accumulation steps
    like the pretraining data's (:mod:`gptlab.data.sampling`).
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
        num_folds: int | None = None,
        fold: int = 0,
        label_names: Sequence[str] | None = None,
        preprocessing: WordPreprocessing | Mapping[str, Any] | None = None,
        truncation: str = "head",
        empty_text: str = "skip",
        unknown_chars: str = "drop_rare",
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
        if path is not None:
            check_split_fractions(val_fraction, test_fraction, "rows")
        check_block_size(block_size)
        check_fold(num_folds, fold)
        if num_folds is not None and path is None and train_path is None:
            raise ValueError("data.num_folds needs training rows to cut into folds: set data.train_path")
        if empty_text not in EMPTY_TEXT:
            raise ValueError(f"unknown empty_text {empty_text!r}; use one of {EMPTY_TEXT}")
        if unknown_chars not in UNKNOWN_CHARS:
            raise ValueError(f"unknown unknown_chars {unknown_chars!r}; use one of {UNKNOWN_CHARS}")
        self.tokenizer = tokenizer
        self.block_size = block_size
        self.path = path
        self.split_paths = split_paths
        self.fields = (text_field, label_field)
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.num_folds = num_folds
        self.fold = fold
        self.seed = seed
        self.label_names = None if label_names is None else list(label_names)
        self.preprocessing = WordPreprocessing.from_any(preprocessing)
        self.truncation = truncation
        self.empty_text = empty_text
        self.unknown_chars = unknown_chars
        self.encoding_errors = encoding_errors
        self.batch_size = batch_size
        self.bucket_by_length = bucket_by_length
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.datasets: dict[str, TextClassificationDataset] = {}
        # the raw texts and labels of each split, for the classical baseline (gptlab.callbacks.baseline)
        self.texts: dict[str, tuple[list[str], list[str]]] = {}

    def model_kwargs(self) -> dict[str, Any]:
        """What the model must be built with to fit this data (call after ``setup``)."""
        return {
            "vocab_size": self.tokenizer.vocab_size,
            "tokenizer": self.tokenizer,
            "label_names": self.label_names,
            "preprocessing": self.preprocessing.to_hparams(),
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
        for name, (texts, labels) in splits.items():
            self.datasets[name] = TextClassificationDataset(
                texts,
                labels,
                tokenizer=self.tokenizer,
                max_length=self.block_size,
                label_names=self.label_names,
                truncation=self.truncation,
                unknown_chars="drop" if self.unknown_chars == "drop_rare" else self.unknown_chars,
            )
        self._check_unknown_chars()
        self.texts = splits
        if "test" not in self.datasets and "val" in self.datasets:
            self.datasets["test"] = self.datasets["val"]
        sizes = ", ".join(f"{name} {len(d):,}" for name, d in self.datasets.items())
        rank_zero_info(f"classification data: {len(self.label_names)} labels; rows: {sizes}")

    def _check_unknown_chars(self) -> None:
        """Report the characters dropped per split; stop when ``drop_rare`` would drop more than
        ``RARE_UNKNOWN_SHARE`` of the training text (a pretrained vocabulary that misses this data's)."""
        train = self.datasets.get("train")
        if (
            self.unknown_chars == "drop_rare"
            and train is not None
            and train.dropped_chars > RARE_UNKNOWN_SHARE * train.num_chars
        ):
            raise UnknownCharactersError(
                f"train: {describe_dropped(train.dropped, train.num_chars)}, more than "
                f"{RARE_UNKNOWN_SHARE:.1%}: map them to characters the vocabulary has, set "
                "data.unknown_chars=drop to drop them anyway, or pretrain with a byte or BPE tokenizer "
                "(tokenizer=byte, tokenizer=bpe), which encodes any text"
            )
        for name, dataset in self.datasets.items():
            if dataset.dropped:
                rank_zero_info(f"{name}: {describe_dropped(dataset.dropped, dataset.num_chars)}; dropped")

    def _read_splits(self) -> dict[str, tuple[list[str], list[str]]]:
        splits = self._read_fixed_splits()
        if self.num_folds is None or "train" not in splits:
            return splits
        # The fold's pool: every row that is not test, train first, then val, in file order.
        pool = [splits.pop(name) for name in ("train", "val") if name in splits]
        texts = [text for part, _ in pool for text in part]
        labels = [label for _, part in pool for label in part]
        folds = stratified_folds(labels, self.num_folds, self.split_seed)
        held_out = set(folds[self.fold])
        for name, keep in (("train", lambda i: i not in held_out), ("val", held_out.__contains__)):
            rows = [i for i in range(len(labels)) if keep(i)]
            splits[name] = ([texts[i] for i in rows], [labels[i] for i in rows])
        rank_zero_info(
            f"k-fold: fold {self.fold} of {self.num_folds} (data.split_seed={self.split_seed}) is the "
            f"validation split: {len(held_out):,} of {len(labels):,} rows; the test split is the same "
            "for every fold"
        )
        return splits

    def _read_fixed_splits(self) -> dict[str, tuple[list[str], list[str]]]:
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
        after = " (after data.preprocessing)" if self.preprocessing.active else ""
        skipped: list[tuple[str, int]] = []
        for file in expand_paths(path):
            for line, record in iter_records(file, self.fields, errors=self.encoding_errors):
                text, label = record[text_field], record[label_field]
                if text is not None and self.preprocessing.active:
                    text = self.preprocessing(text)
                if label is None or not label.strip() or label.strip().lower() == "nan":
                    raise CorpusFormatError(
                        f"'{file}' line {line} has an empty label ({label!r}); fill in its "
                        f"{label_field!r} or remove the row"
                    )
                if text is None or not text.strip():
                    if self.empty_text == "error":
                        raise CorpusFormatError(
                            f"'{file}' line {line} has an empty text{after}; remove the row, or set "
                            "data.empty_text=skip to skip such rows"
                        )
                    skipped.append((str(file), line))
                    continue
                texts.append(text)
                labels.append(label.strip())
        if skipped:
            rank_zero_info(
                f"skipped {len(skipped)} row(s) with an empty text{after} in '{path}' (the first: "
                f"'{skipped[0][0]}' line {skipped[0][1]}); set data.empty_text=error to refuse them"
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


def check_fold(num_folds: int | None, fold: int) -> None:
    """Refuse a fold setting that names no fold of a k-fold split."""
    if num_folds is None:
        if fold != 0:
            raise ValueError(
                f"data.fold={fold} is set but data.num_folds is null; set data.num_folds=k (e.g. 5) for "
                "k-fold cross-validation, or leave data.fold at 0"
            )
        return
    if num_folds < 2:
        raise ValueError(
            f"data.num_folds={num_folds}: k-fold cross-validation needs at least 2 folds (e.g. "
            "data.num_folds=5), or data.num_folds=null for one fixed train / val split"
        )
    if not 0 <= fold < num_folds:
        raise ValueError(
            f"data.fold={fold} is out of range for data.num_folds={num_folds}: folds are numbered 0 to "
            f"{num_folds - 1}; sweep them with -m data.fold={','.join(map(str, range(num_folds)))}"
        )


def stratified_folds(labels: Sequence[str], num_folds: int, seed: int) -> list[list[int]]:
    """Row indices of ``num_folds`` folds, each label's rows shuffled with ``seed`` and dealt out in
    turn, so each fold holds every label's rows to within one; each fold keeps the rows' original order.
    Refuses a label with fewer rows than folds (some fold would validate without it)."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_label[label].append(index)
    rare = {label: len(rows) for label, rows in by_label.items() if len(rows) < num_folds}
    if rare:
        counts = ", ".join(f"{label!r}: {n}" for label, n in sorted(rare.items()))
        raise ValueError(
            f"data.num_folds={num_folds} is more than the rows of some labels ({counts}): every fold must "
            f"hold each label; lower data.num_folds to at most {min(rare.values())}, or add rows"
        )
    rng = random.Random(seed)
    folds: list[list[int]] = [[] for _ in range(num_folds)]
    start = 0  # each label deals from where the last stopped, so the folds' sizes differ by one at most
    for label in sorted(by_label):
        rows = by_label[label]
        rng.shuffle(rows)
        for position, row in enumerate(rows):
            folds[(start + position) % num_folds].append(row)
        start = (start + len(rows)) % num_folds
    return [sorted(fold) for fold in folds]


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
