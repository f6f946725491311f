"""What tells a researcher whether to trust a classifier: the classical baseline beside it, calibration,
the metric that picks the best checkpoint, and the characters its vocabulary lacks (issue #20)."""

from __future__ import annotations

import functools
import logging
import math
import random
import sys
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from gptlab.callbacks.baseline import ClassicalBaseline, baseline_scores
from gptlab.callbacks.calibration import ReliabilityDiagram, reliability_bins
from gptlab.data.classification import ClassificationDataModule
from gptlab.run.hydra import RunStopped, instantiate_group
from gptlab.tasks.lm import GPTModule
from gptlab.tokenization import CharTokenizer, UnknownCharactersError
from gptlab.train import train
from tests.test_classification import (
    BACKBONE,
    TINY_CLASSIFIER,
    austen_sample,  # noqa: F401 -- a fixture
    batch_of,
    char_tokenizer,
    save_checkpoint,
    tiny_classifier,
    write_rows,
)
from tests.test_predict import events

sklearn = pytest.importorskip("sklearn")


def synthetic_reviews(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Short texts whose label shows in some of their words, with noise words and a third of them
    mislabelled-looking (no cue at all), so that the scores are neither 0 nor 1."""
    rng = random.Random(seed)
    cues = {"pos": ["good", "great", "lovely"], "neg": ["bad", "dull", "awful"]}
    noise = ["film", "plot", "actor", "scene", "the", "a", "very", "quite", "story"]
    texts, labels = [], []
    for i in range(n):
        label = "pos" if rng.random() < 0.6 else "neg"
        words = rng.sample(noise, 4)
        if i % 3:
            words.insert(rng.randrange(5), rng.choice(cues[label]))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def sklearn_directly(train, test, C: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import FeatureUnion, Pipeline

    model = Pipeline([
        ("features", FeatureUnion([
            ("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)),
        ])),
        ("lr", LogisticRegression(C=C, max_iter=1000)),
    ]).fit(*train)  # fmt: skip
    predicted = model.predict(test[0])
    return accuracy_score(test[1], predicted), f1_score(test[1], predicted, average="macro"), model


# --- the baseline ------------------------------------------------------------------------------------


def test_baseline_scores_equal_scikit_learn_called_directly():
    train, val, test = synthetic_reviews(80, 0), synthetic_reviews(30, 1), synthetic_reviews(30, 2)
    scores = baseline_scores(train, test, Cs=[1.0])
    acc, f1, _ = sklearn_directly(train, test, C=1.0)
    assert 0.5 < acc < 1  # the cues teach it something, the cue-less third keeps it from perfect
    assert scores["baseline/acc"] == pytest.approx(acc) and scores["baseline/f1"] == pytest.approx(f1)
    majority = max(set(train[1]), key=train[1].count)
    assert scores["baseline/majority_acc"] == pytest.approx(test[1].count(majority) / len(test[1]))

    # several Cs: the one with the best macro-F1 on val is tested
    Cs = [0.01, 1.0, 100.0]
    from sklearn.metrics import f1_score

    val_f1 = [
        f1_score(val[1], sklearn_directly(train, val, C)[2].predict(val[0]), average="macro") for C in Cs
    ]
    best = Cs[val_f1.index(max(val_f1))]
    chosen = baseline_scores(train, test, val, Cs=Cs)
    assert chosen["baseline/C"] == best
    assert chosen["baseline/acc"] == pytest.approx(sklearn_directly(train, test, best)[0])


SPLIT_SIZES = {"train": 60, "val": 20, "test": 20}


class RecordingModule:
    """What the callback needs of a classifier: its test accuracy metric and ``log``."""

    def __init__(self, test_acc: float) -> None:
        self.test_acc = SimpleNamespace(compute=lambda: torch.tensor(test_acc))
        self.logged: dict[str, float] = {}

    def log(self, name: str, value: float) -> None:
        self.logged[name] = value


def test_baseline_callback_logs_the_margin_and_says_once_when_sklearn_is_missing(monkeypatch, caplog):
    splits = {name: synthetic_reviews(n, seed) for seed, (name, n) in enumerate(SPLIT_SIZES.items())}
    trainer = SimpleNamespace(datamodule=SimpleNamespace(texts=splits))
    module = RecordingModule(test_acc=0.9)
    callback = ClassicalBaseline(Cs=[1.0])
    callback.on_test_epoch_end(trainer, module)
    expected = baseline_scores(splits["train"], splits["test"], Cs=[1.0])
    assert module.logged["baseline/acc"] == pytest.approx(expected["baseline/acc"])
    assert module.logged["baseline/margin"] == pytest.approx(0.9 - expected["baseline/acc"])
    assert set(module.logged) == {"baseline/acc", "baseline/f1", "baseline/majority_acc", "baseline/margin"}

    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` raises ImportError
    module, callback = RecordingModule(0.9), ClassicalBaseline()
    with caplog.at_level(logging.INFO):
        callback.on_test_epoch_end(trainer, module)
        callback.on_test_epoch_end(trainer, module)
    told = [r.message for r in caplog.records if "scikit-learn is not installed" in r.message]
    assert told == [
        "baseline: skipped, scikit-learn is not installed (pip install -e '.[baseline]'); "
        "callbacks.baseline=null turns the baseline off"
    ]
    assert module.logged == {}


def test_classification_callbacks_have_the_baseline_and_one_key_turns_it_off(compose_train):
    def callback_types(*overrides):
        cfg = compose_train("experiment=austen_scratch", *overrides)
        return {type(c).__name__ for c in instantiate_group(cfg.callbacks)}

    assert {"ClassicalBaseline", "ReliabilityDiagram", "ConfusionMatrixLogger"} <= callback_types()
    assert "ClassicalBaseline" not in callback_types("callbacks.baseline=null")


# --- calibration -------------------------------------------------------------------------------------

LOGITS = [[2.0, 0.1], [0.3, 0.2], [-1.0, 1.5], [0.0, 3.0], [1.2, 1.0], [0.4, -0.9], [-0.2, 0.5], [2.5, -2.0]]
LABELS = [0, 1, 1, 0, 0, 0, 1, 1]


def ece_by_hand(logits, labels, n_bins=15) -> float:
    bins: dict[int, list[tuple[float, bool]]] = {}
    for row, label in zip(logits, labels, strict=True):
        exps = [math.exp(x) for x in row]
        probs = [e / sum(exps) for e in exps]
        confidence = max(probs)
        bins.setdefault(int(confidence * n_bins), []).append((confidence, probs.index(confidence) == label))
    gaps = [abs(sum(c for _, c in items) - sum(p for p, _ in items)) for items in bins.values()]
    return sum(gaps) / len(labels)  # sum over bins of (n_bin / N) * |accuracy - confidence|


def test_test_ece_equals_a_hand_computation_and_the_reliability_diagram_is_logged(tmp_path):
    model = tiny_classifier()
    batch = batch_of(model, texts=["a"] * 8, labels=LABELS)
    model._step = lambda batch: (torch.tensor(0.0), None, torch.tensor(LOGITS))
    logger = TensorBoardLogger(tmp_path, name="", version="")
    trainer = L.Trainer(logger=logger, callbacks=[ReliabilityDiagram()], enable_progress_bar=False,
                        enable_model_summary=False)  # fmt: skip
    trainer.test(model, DataLoader([batch], batch_size=None))
    expected = ece_by_hand(LOGITS, LABELS)
    assert expected > 0.05
    assert float(trainer.callback_metrics["test/ece"]) == pytest.approx(expected, abs=1e-6)
    logged = events(tmp_path)
    assert len(logged.Images("test/reliability")) == 1

    confidences = torch.tensor(LOGITS).softmax(-1).max(-1).values
    correct = torch.tensor(LOGITS).argmax(-1) == torch.tensor(LABELS)
    confidence, accuracy, count = reliability_bins(confidences, correct, 15)
    assert count.sum() == 8
    assert float((count / 8 * (accuracy - confidence).abs()).sum()) == pytest.approx(expected)


def test_prediction_probabilities_are_the_softmax_alone():
    model = tiny_classifier()
    batch = batch_of(model)
    expected = model.classify(batch["input_ids"], batch["attention_mask"]).softmax(-1)
    torch.testing.assert_close(model.predict_step(batch, 0), expected)


# --- the metric that picks the best checkpoint -------------------------------------------------------


@pytest.mark.parametrize("experiment", ["austen_scratch", "austen_finetune", "gpt2_classify"])
def test_classifiers_keep_the_best_checkpoint_and_stop_by_macro_f1(compose_train, experiment):
    cfg = compose_train(f"experiment={experiment}")
    for callback in (cfg.callbacks.model_checkpoint, cfg.callbacks.early_stopping):
        assert (callback.monitor, callback.mode) == ("val/f1", "max")
    assert (cfg.optimized_metric, cfg.optimized_metric_mode) == ("val/f1", "max")


def test_the_austen_search_maximises_the_best_macro_f1(compose_train):
    cfg = compose_train("hparams_search=austen_optuna", "experiment=austen_scratch")
    assert cfg.optimized_metric == "val/f1_best"


# --- characters a vocabulary lacks -------------------------------------------------------------------


def labelled(tmp_path, name: str, texts: list[str]) -> str:
    return str(write_rows(tmp_path / name, [{"text": t, "label": "ab"[i % 2]} for i, t in enumerate(texts)]))


def data_with(tmp_path, tokenizer, train_texts, val_texts, **kwargs) -> ClassificationDataModule:
    dm = ClassificationDataModule(
        tokenizer, block_size=64, train_path=labelled(tmp_path, "train.jsonl", train_texts),
        val_path=labelled(tmp_path, "val.jsonl", val_texts), **kwargs,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def test_a_pretrained_vocabulary_missing_much_of_the_training_text_stops_with_the_options(tmp_path, caplog):
    letters = CharTokenizer()
    letters.fit(["abcdefghijklmnopqrstuvwxyz ."])
    train_texts = ["the price was 10 $ and 20 $ (tax)."] * 4 + ["a fine day."] * 4  # digits: ~8% of it
    with pytest.raises(UnknownCharactersError) as err:
        data_with(tmp_path, letters, train_texts, ["ok."] * 2)
    message = str(err.value)
    assert message.startswith("train: 32 characters (17.78% of 180) are not in the tokenizer's vocabulary")
    assert "the most frequent: '0' 8, '$' 8, '1' 4, '2' 4, '(' 4, ')' 4" in message
    assert "more than 0.5%: map them" in message and "data.unknown_chars=drop" in message
    assert "tokenizer=byte" in message

    # explicitly dropped: the run goes on, and the share is reported per split
    with caplog.at_level(logging.INFO):
        dm = data_with(tmp_path, letters, train_texts, ["ok 1."] * 2, unknown_chars="drop")
    assert dm.datasets["train"].dropped_chars == 32
    reports = [r.message for r in caplog.records if "not in the tokenizer's vocabulary" in r.message]
    assert reports[0].startswith("train: 32 characters (") and reports[1].startswith("val: 2 characters (")

    # a few: dropped under the default, and reported
    few = ["a fine day and a fine night with friends, 7 of them."] + ["a fine day."] * 40
    dm = data_with(tmp_path, letters, few, ["ok."] * 2)
    assert dm.datasets["train"].dropped["7"] == 1 and dm.datasets["train"].dropped[","] == 1


def test_a_vocabulary_fitted_here_never_stops_for_the_characters_val_lacks(tmp_path):
    dm = data_with(tmp_path, CharTokenizer(), ["abc abc"] * 4, ["xyz 123"] * 4)
    assert dm.datasets["val"].dropped_chars == 24 and dm.datasets["train"].dropped_chars == 0


def test_fine_tuning_from_a_vocabulary_without_the_datas_characters_stops_in_one_line(
    compose_train,
    austen_sample,  # noqa: F811
    tmp_path,
):
    tokenizer = char_tokenizer(["abcdefghijklmnopqrstuvwxyz ,."])
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    pretrained = save_checkpoint(lm, tmp_path / "pretrain.ckpt")
    cfg = compose_train("experiment=austen_finetune", "debug=fdr", f"data.path={austen_sample}",
                        f"model.pretrained={pretrained}", *TINY_CLASSIFIER)  # fmt: skip
    stopped = r"^train: [\d,]+ characters \(\d+\.\d\d% of [\d,]+\) are not in .*: '.*unknown_chars=drop"
    with pytest.raises(RunStopped, match=stopped):
        train(cfg)
    assert not (tmp_path / "run").exists()  # stopped before anything was written


def test_the_summary_line_of_a_run_lists_the_baseline(tmp_path, caplog):
    from gptlab.run.record import summarize_run

    cfg = SimpleNamespace(paths=SimpleNamespace(output_dir=str(tmp_path), log_dir=str(tmp_path)))
    trainer = SimpleNamespace(checkpoint_callback=None, global_step=3, callbacks=[])
    metrics = {"test/acc": torch.tensor(0.5), "baseline/acc": 0.7, "baseline/margin": -0.2}
    with caplog.at_level(logging.INFO):
        summarize_run(cfg, trainer, metrics, None)
    assert "baseline: baseline/acc 0.7000, baseline/margin -0.2000" in caplog.text
