"""k-fold cross-validation of the classification data: folds disjoint, covering, stratified and seeded."""

from __future__ import annotations

from collections import Counter

import pytest

from gptlab.data.classification import ClassificationDataModule, stratified_folds
from gptlab.tokenization import CharTokenizer
from tests.test_classification import rows_of, write_rows

LABELS = ["a"] * 23 + ["b"] * 11 + ["c"] * 7


def test_folds_are_disjoint_cover_the_rows_and_keep_label_proportions():
    folds = stratified_folds(LABELS, 5, seed=3)
    assert sorted(i for fold in folds for i in fold) == list(range(len(LABELS)))  # disjoint and covering
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    for label, total in Counter(LABELS).items():
        counts = [sum(LABELS[i] == label for i in fold) for fold in folds]
        assert sum(counts) == total and max(counts) - min(counts) <= 1, (label, counts)


def test_folds_are_fixed_by_the_seed():
    assert stratified_folds(LABELS, 4, seed=3) == stratified_folds(LABELS, 4, seed=3)
    assert stratified_folds(LABELS, 4, seed=3) != stratified_folds(LABELS, 4, seed=4)


def test_more_folds_than_a_labels_rows_is_refused():
    with pytest.raises(ValueError, match=r"data.num_folds=8 is more than the rows of some labels \('c': 7\)"):
        stratified_folds(LABELS, 8, seed=0)


@pytest.mark.parametrize(
    ("num_folds", "fold", "message"),
    [
        (1, 0, r"data.num_folds=1: k-fold cross-validation needs at least 2 folds"),
        (5, 5, r"data.fold=5 is out of range for data.num_folds=5: folds are numbered 0 to 4"),
        (5, -1, r"data.fold=-1 is out of range"),
        (None, 2, r"data.fold=2 is set but data.num_folds is null"),
    ],
)
def test_bad_fold_settings_are_refused_at_construction(tmp_path, num_folds, fold, message):
    path = write_rows(tmp_path / "d.jsonl", rows_of(20))
    with pytest.raises(ValueError, match=message):
        ClassificationDataModule(
            tokenizer=CharTokenizer(), block_size=16, path=str(path), num_folds=num_folds, fold=fold
        )


def texts_of(dm: ClassificationDataModule, split: str) -> list[str]:
    return [dm.tokenizer.decode(item["input_ids"].tolist()) for item in dm.datasets[split]]


def fold_module(tmp_path, fold: int, **kwargs) -> ClassificationDataModule:
    dm = ClassificationDataModule(tokenizer=CharTokenizer(), block_size=32, num_folds=4, fold=fold, **kwargs)
    dm.setup("fit")
    return dm


def test_each_fold_validates_on_its_own_rows_and_the_test_split_stays_fixed(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", rows_of(60, labels=("x", "y", "y")))
    plain = ClassificationDataModule(tokenizer=CharTokenizer(), block_size=32, path=str(path))
    plain.setup("fit")
    modules = [fold_module(tmp_path, fold, path=str(path)) for fold in range(4)]
    vals = [set(texts_of(dm, "val")) for dm in modules]
    pool = set(texts_of(plain, "train")) | set(texts_of(plain, "val"))
    assert set().union(*vals) == pool and sum(map(len, vals)) == len(pool)  # the folds cut the pool
    for dm, val in zip(modules, vals, strict=True):
        assert set(texts_of(dm, "train")) == pool - val
        assert texts_of(dm, "test") == texts_of(plain, "test")  # the same held-out test for every fold
        labels = Counter(dm.datasets["val"].labels)
        assert abs(labels[0] * 2 - labels[1]) <= 2  # one x for two y, within a row of each


def test_folds_over_separate_files_pool_train_and_val(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", rows_of(16))
    val = write_rows(tmp_path / "val.jsonl", [{"text": f"text {i}", "label": "xy"[i % 2]} for i in range(8)])
    test = write_rows(tmp_path / "test.jsonl", [{"text": "text 1", "label": "x"}])
    dm = fold_module(tmp_path, 1, train_path=str(train), val_path=str(val), test_path=str(test))
    assert len(dm.datasets["train"]) == 18 and len(dm.datasets["val"]) == 6
    assert texts_of(dm, "test") == ["text 1"]
