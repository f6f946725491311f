"""The bundled Chinese sentiment set: a balanced pos / neg classification task that the recipe composes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from hydra.utils import instantiate

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = ROOT / "data" / "sentiment_zh.jsonl"


def test_the_bundled_file_is_distinct_balanced_chinese_sentences():
    rows = [json.loads(line) for line in SENTIMENT.read_text(encoding="utf-8").splitlines()]
    assert Counter(row["label"] for row in rows) == {"pos": 3000, "neg": 3000}
    texts = [row["text"] for row in rows]
    assert len(set(texts)) == len(texts)
    assert all(8 <= len(text) <= 120 for text in texts)
    han = sum(1 for text in texts for ch in text if "\u4e00" <= ch <= "\u9fff")
    assert han / sum(map(len, texts)) > 0.7


def test_the_experiment_splits_it_80_10_10_by_label_within_the_block(compose_train):
    cfg = compose_train("experiment=sentiment_zh")
    assert cfg.data.path == str(SENTIMENT) and cfg.model.backbone.block_size == 128
    dm = instantiate(cfg.data, tokenizer=instantiate(cfg.tokenizer))
    dm.setup("fit")
    assert dm.model_kwargs()["label_names"] == ["neg", "pos"]
    for name, size in {"train": 4800, "val": 600, "test": 600}.items():
        assert Counter(dm.datasets[name].labels) == {0: size // 2, 1: size // 2}
    # no sentence is cut: the longest, in BPE tokens (rare characters take several), stays under the block
    assert max(len(ids) for ids in dm.datasets["train"].ids) < cfg.model.backbone.block_size
    train = {tuple(ids) for ids in dm.datasets["train"].ids}
    assert not train & {tuple(ids) for ids in dm.datasets["test"].ids}


def test_fast_dev_run_of_the_recipe_on_the_bundled_set(compose_train):
    from gptlab.train import train

    # the recipe's own data, tokenizer and block; a smaller model, and no baseline fit (its own tests)
    cfg = compose_train(
        "experiment=sentiment_zh", "debug=fdr", "callbacks.rich_progress_bar=null", "callbacks.baseline=null",
        "model.backbone.n_embd=32", "data.batch_size=4",
    )  # fmt: skip
    assert 0 <= train(cfg) <= 1  # optimized_metric: a classification score
