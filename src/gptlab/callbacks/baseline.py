"""A classical baseline beside every classification run: TF-IDF word and character n-grams with logistic
regression (scikit-learn), and the majority class, on the run's own train / val / test split."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

log = logging.getLogger(__name__)

Split = tuple[Sequence[str], Sequence[str]]  # texts and their labels


def tfidf_features(word_ngrams: Sequence[int] = (1, 2), char_ngrams: Sequence[int] = (2, 5)):
    """Word and character (within word boundaries) TF-IDF features side by side, with sublinear term
    frequencies, of the n-grams in two or more training texts. Character n-grams read scripts written
    without spaces (Chinese), which the word analyser sees as one token per sentence."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion

    return FeatureUnion(
        [
            ("word", TfidfVectorizer(ngram_range=tuple(word_ngrams), sublinear_tf=True, min_df=2)),
            (
                "char",
                TfidfVectorizer(
                    analyzer="char_wb", ngram_range=tuple(char_ngrams), sublinear_tf=True, min_df=2
                ),
            ),
        ]
    )


def baseline_scores(
    train: Split,
    test: Split,
    val: Split | None = None,
    Cs: Sequence[float] = (1.0,),
    word_ngrams: Sequence[int] = (1, 2),
    char_ngrams: Sequence[int] = (2, 5),
    class_weight: str | None = None,
) -> dict[str, float]:
    """``baseline/acc`` and ``baseline/f1`` (macro) on ``test`` of :func:`tfidf_features` and a logistic
    regression fitted on ``train`` (with the ``C`` of ``Cs`` that scores the best macro-F1 on ``val``,
    when there are several), and ``baseline/majority_acc``: the accuracy of always answering the training
    set's most frequent label."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    features = tfidf_features(word_ngrams, char_ngrams)
    x_train = features.fit_transform(train[0])  # once: the features do not depend on C
    models = [
        LogisticRegression(C=C, class_weight=class_weight, max_iter=1000).fit(x_train, train[1]) for C in Cs
    ]
    if len(models) == 1:
        model = models[0]
    else:
        x_val = features.transform(val[0])
        model = max(models, key=lambda m: f1_score(val[1], m.predict(x_val), average="macro"))
    predicted = model.predict(features.transform(test[0]))
    majority = Counter(train[1]).most_common(1)[0][0]
    return {
        "baseline/acc": float(accuracy_score(test[1], predicted)),
        "baseline/f1": float(f1_score(test[1], predicted, average="macro")),
        "baseline/majority_acc": sum(label == majority for label in test[1]) / len(test[1]),
        "baseline/C": float(model.C),
    }


class ClassicalBaseline(L.Callback):
    """At the end of each test, fit the TF-IDF logistic regression of :func:`baseline_scores` on the
    datamodule's training texts (all of each text: the GPT sees ``block_size`` tokens) and log its
    scores on the tested split beside the GPT's: ``baseline/acc``, ``baseline/f1``,
    ``baseline/majority_acc`` and ``baseline/margin`` (``test/acc`` minus ``baseline/acc``). ``Cs``: the
    regularisation strengths tried, picked by macro-F1 on the validation split (when the test split is
    another one). The datamodule gives its raw splits as ``texts``: {split: (texts, labels)}; others (a
    language model's) are left alone. Without scikit-learn (the ``baseline`` extra) it says so once and
    does nothing."""

    def __init__(
        self,
        word_ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] = (2, 5),
        Cs: Sequence[float] = (1.0, 10.0),
        class_weight: str | None = None,
    ) -> None:
        if not Cs:
            raise ValueError("callbacks.baseline.Cs is empty; give at least one C, e.g. [1.0]")
        self.pipeline = {
            "word_ngrams": list(word_ngrams),
            "char_ngrams": list(char_ngrams),
            "class_weight": class_weight,
        }
        self.Cs = list(Cs)
        self.scores: dict[str, float] | None = None
        self.missing_told = False

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        splits = getattr(trainer.datamodule, "texts", None)
        if not splits or not hasattr(pl_module, "test_acc"):
            return
        if "train" not in splits:
            rank_zero_info("baseline: skipped, the data has no training split to fit it on")
            return
        try:
            import sklearn  # noqa: F401
        except ImportError:
            if not self.missing_told:
                rank_zero_info(
                    "baseline: skipped, scikit-learn is not installed (pip install -e '.[baseline]'); "
                    "callbacks.baseline=null turns the baseline off"
                )
                self.missing_told = True
            return
        if self.scores is None:
            test = splits.get("test") or splits["val"]
            # choosing C on the split that is also tested would flatter the baseline
            val = splits.get("val") if "test" in splits else None
            Cs = self.Cs if val is not None else [1.0]
            self.scores = baseline_scores(splits["train"], test, val, Cs, **self.pipeline)
        scores = dict(self.scores)
        gpt_acc = float(pl_module.test_acc.compute())
        scores["baseline/margin"] = gpt_acc - scores["baseline/acc"]
        del scores["baseline/C"]
        for name, value in scores.items():
            pl_module.log(name, value)
        margin = scores["baseline/margin"]
        rank_zero_info(
            f"baseline (TF-IDF word + char n-grams, logistic regression C={self.scores['baseline/C']:g}): "
            f"test acc {scores['baseline/acc']:.4f}, macro-F1 {scores['baseline/f1']:.4f}; majority class "
            f"{scores['baseline/majority_acc']:.4f}; the GPT's test/acc {gpt_acc:.4f} is "
            f"{abs(margin):.4f} {'above' if margin >= 0 else 'below'} it"
        )
