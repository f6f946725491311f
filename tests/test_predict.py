"""A classifier run end to end: its logs, then gptlab-eval and gptlab-predict from its checkpoint alone."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gptlab.callbacks.baseline import baseline_scores
from gptlab.data.classification import ClassificationDataModule
from gptlab.eval import evaluate
from gptlab.predict import predict
from gptlab.run.files import umask as current_umask
from gptlab.tasks.lm import GPTModule
from gptlab.tokenization import CharTokenizer
from gptlab.train import train
from tests.conftest import compose_config
from tests.test_classification import (
    AUSTEN,
    BACKBONE,
    TINY_CLASSIFIER,
    char_tokenizer,
    save_checkpoint,
    write_rows,
)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory) -> tuple[Path, Path]:
    """A short real austen_scratch run on a sample of the data: (sample file, run directory)."""
    out = tmp_path_factory.mktemp("classifier")
    rows, seen = [], {}
    for line in AUSTEN.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if seen.setdefault(row["label"], 0) < 10:
            seen[row["label"]] += 1
            rows.append({"text": row["text"][:120], "label": row["label"]})
    sample = write_rows(out / "austen.jsonl", rows)
    cfg = compose_config(
        out, "experiment=austen_scratch", f"data.path={sample}", "data.val_fraction=0.2",
        "data.test_fraction=0.2", *TINY_CLASSIFIER, "trainer.max_steps=6", "trainer.val_check_interval=3",
        "trainer.log_every_n_steps=3",
    )  # fmt: skip
    train(cfg)
    return sample, Path(cfg.paths.output_dir)


def best_checkpoint(run_dir: Path) -> Path:
    return next((run_dir / "checkpoints").glob("best-*.ckpt"))


def events(directory: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_training_logs_classification_metrics_and_confusion_matrices(classifier_run):
    _, run_dir = classifier_run
    logged = events(run_dir / "tensorboard")
    expected = {
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "val/f1",
        "val/acc_best",
        "test/acc",
        "test/f1",
    }
    assert expected <= set(logged.Tags()["scalars"])
    assert [e.step for e in logged.Images("val/confusion_matrix")] == [3, 6]
    assert len(logged.Images("test/confusion_matrix")) == 1
    best = max(e.value for e in logged.Scalars("val/acc"))
    assert logged.Scalars("val/acc_best")[-1].value == pytest.approx(best)
    best_f1 = max(e.value for e in logged.Scalars("val/f1"))
    assert logged.Scalars("val/f1_best")[-1].value == pytest.approx(best_f1)


def test_training_logs_the_baseline_beside_the_test_and_its_calibration(classifier_run):
    sample, run_dir = classifier_run
    logged = events(run_dir / "tensorboard")
    # the baseline on the run's own split, as scikit-learn scores it (tests/test_classifier_checks.py)
    data = ClassificationDataModule(CharTokenizer(), block_size=16, path=str(sample), val_fraction=0.2,
                                    test_fraction=0.2)  # fmt: skip
    data.setup("fit")
    expected = baseline_scores(data.texts["train"], data.texts["test"], data.texts["val"], Cs=[1.0, 10.0])
    for name in ("baseline/acc", "baseline/f1", "baseline/majority_acc"):
        assert logged.Scalars(name)[-1].value == pytest.approx(expected[name], abs=1e-6)
    margin = logged.Scalars("test/acc")[-1].value - expected["baseline/acc"]
    assert logged.Scalars("baseline/margin")[-1].value == pytest.approx(margin, abs=1e-6)
    # and in run_summary.json, which a sweep's summary reads (mean ± std of the baseline over folds)
    summary = json.loads((run_dir / "run_summary.json").read_text())["metrics"]
    for name in ("baseline/acc", "baseline/f1", "baseline/majority_acc"):
        assert summary[name] == pytest.approx(expected[name], abs=1e-6)
    assert summary["baseline/margin"] == pytest.approx(margin, abs=1e-6)
    assert 0 <= logged.Scalars("test/ece")[-1].value <= 1
    assert len(logged.Images("test/reliability")) == 1


def test_eval_tests_a_checkpoint_alone_on_the_test_split(classifier_run, tmp_path):
    sample, run_dir = classifier_run
    cfg = compose_config(
        tmp_path, f"ckpt_path={best_checkpoint(run_dir)}", f"data.path={sample}", "data.val_fraction=0.2",
        "data.test_fraction=0.2", config_name="eval",
    )  # fmt: skip
    metrics = evaluate(cfg)
    assert 0 <= metrics["test/acc"] <= 1 and 0 <= metrics["test/f1"] <= 1 and metrics["test/loss"] > 0
    assert cfg.data.block_size == 16  # the checkpoint's, through ${model.backbone.block_size}
    logged = events(tmp_path / "run" / "tensorboard")
    assert len(logged.Images("test/confusion_matrix")) == 1
    # calibration and the baseline on the same split, as the training run's test reports them
    assert 0 <= metrics["test/ece"] <= 1 and len(logged.Images("test/reliability")) == 1
    data = ClassificationDataModule(CharTokenizer(), block_size=16, path=str(sample), val_fraction=0.2,
                                    test_fraction=0.2)  # fmt: skip
    data.setup("test")
    expected = baseline_scores(data.texts["train"], data.texts["test"], data.texts["val"], Cs=[1.0, 10.0])
    for name in ("baseline/acc", "baseline/f1", "baseline/majority_acc"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-6)
    assert metrics["baseline/margin"] == pytest.approx(
        metrics["test/acc"] - expected["baseline/acc"], abs=1e-6
    )


def test_eval_on_a_test_file_alone_skips_the_baseline_with_a_message(classifier_run, tmp_path, caplog):
    sample, run_dir = classifier_run
    cfg = compose_config(
        tmp_path, f"ckpt_path={best_checkpoint(run_dir)}", "data.path=null", f"data.test_path={sample}",
        config_name="eval",
    )  # fmt: skip
    with caplog.at_level("INFO"):
        metrics = evaluate(cfg)
    assert 0 <= metrics["test/ece"] <= 1 and "baseline/acc" not in metrics
    assert "baseline: skipped, the data has no training split to fit it on" in caplog.text


def read_predictions(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_predict_writes_every_row_with_a_label_and_probabilities(classifier_run, tmp_path, caplog):
    _, run_dir = classifier_run
    texts = tmp_path / "texts.txt"
    texts.write_text(
        "Emma Woodhouse, handsome, clever.\n\nMr. Darcy bowed.\n   \n£5 (a fortune)\n", encoding="utf-8"
    )
    output = tmp_path / "out" / "preds.csv"
    ckpt = best_checkpoint(run_dir)
    cfg = compose_config(
        tmp_path, f"ckpt_path={ckpt}", f"input={texts}", f"output={output}", config_name="predict"
    )
    with caplog.at_level("WARNING"):
        predict(cfg)
    assert "2 input row(s) have no text (line 2, 4); their output rows have an empty label" in caplog.text
    rows = read_predictions(output)
    assert [row["line"] for row in rows] == ["1", "2", "3", "4", "5"]
    prob_columns = [c for c in rows[0] if c.startswith("p_")]
    assert prob_columns == [f"p_{novel}" for novel in sorted(["Emma", "Mansfield Park", "Northanger Abbey",
                            "Persuasion", "Pride & Prejudice", "Sense & Sensibility"])]  # fmt: skip
    for row in rows:
        if row["line"] in ("2", "4"):
            assert row["label"] == "" and all(row[c] == "" for c in prob_columns)
            continue
        probs = {c.removeprefix("p_"): float(row[c]) for c in prob_columns}
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
        assert row["label"] == max(probs, key=probs.get)


def test_predict_reads_a_text_field_from_csv_and_jsonl(classifier_run, tmp_path):
    _, run_dir = classifier_run
    ckpt = best_checkpoint(run_dir)
    table = tmp_path / "in.csv"
    table.write_text(
        'id,body\n1,"Anne Elliot, with an elegant mind"\n2,Catherine Morland\n', encoding="utf-8"
    )
    lines = write_rows(tmp_path / "in.jsonl", [{"body": "Fanny Price"}, {"body": None}, {"body": "Elinor"}])
    for source, count in ((table, 2), (lines, 3)):
        output = tmp_path / f"{source.suffix[1:]}.csv"
        cfg = compose_config(tmp_path, f"ckpt_path={ckpt}", f"input={source}", f"output={output}",
                             "text_field=body", config_name="predict")  # fmt: skip
        assert len(read_predictions(predict(cfg))) == count


def test_predict_refuses_a_language_model(tmp_path):
    tokenizer = char_tokenizer()
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    ckpt = save_checkpoint(lm, tmp_path / "lm.ckpt")
    (tmp_path / "t.txt").write_text("hello\n")
    cfg = compose_config(tmp_path, f"ckpt_path={ckpt}", f"input={tmp_path / 't.txt'}", config_name="predict")
    with pytest.raises(ValueError, match="holds a language model, not a classifier; gptlab-generate"):
        predict(cfg)


def test_predict_never_writes_over_its_input_or_an_unrelated_file(tmp_path):
    table = tmp_path / "texts.csv"
    table.write_text("text\nMr. Darcy bowed.\n", encoding="utf-8")
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n", encoding="utf-8")
    common = [f"ckpt_path={tmp_path / 'never-read.ckpt'}", f"input={table}"]
    for output, overwrite, error in (
        (table, "true", "output=.*texts.csv is one of the input files; predicting would replace the texts"),
        (tmp_path / "." / "texts.csv", "false", "is one of the input files"),
        (notes, "false", "exists and is not an earlier gptlab-predict file; .* or overwrite=true"),
    ):
        cfg = compose_config(tmp_path, *common, f"output={output}", f"overwrite={overwrite}",
                             config_name="predict")  # fmt: skip
        with pytest.raises(FileExistsError, match=error):
            predict(cfg)
    assert table.read_text(encoding="utf-8") == "text\nMr. Darcy bowed.\n"
    assert notes.read_text(encoding="utf-8") == "a,b\n1,2\n"


def test_predict_replaces_earlier_predictions_whole_or_not_at_all(classifier_run, tmp_path, monkeypatch):
    _, run_dir = classifier_run
    texts = tmp_path / "texts.txt"
    texts.write_text("Emma Woodhouse\nMr. Darcy bowed.\n", encoding="utf-8")
    notes = tmp_path / "notes.csv"
    notes.write_text("a,b\n1,2\n", encoding="utf-8")
    common = [f"ckpt_path={best_checkpoint(run_dir)}", f"input={texts}"]
    compose = functools.partial(compose_config, tmp_path, *common, config_name="predict")
    predict(compose(f"output={notes}", "overwrite=true"))  # asked for: replaced
    first = notes.read_text(encoding="utf-8")
    assert first.startswith("line,label,p_") and len(read_predictions(notes)) == 2
    assert notes.stat().st_mode & 0o777 == 0o666 & ~current_umask()

    def fails_midway(*args, **kwargs):
        yield torch.tensor([1.0] + [0.0] * 5)
        raise KeyboardInterrupt

    monkeypatch.setattr("gptlab.tasks.classify.predict_probabilities", fails_midway)
    with pytest.raises(KeyboardInterrupt):
        predict(compose(f"output={notes}"))  # an earlier prediction file: no overwrite=true needed
    assert notes.read_text(encoding="utf-8") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv", "texts.txt"]  # no temporary file left


def test_predict_errors_name_its_own_settings(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    for source, error in ((tmp_path / "nowhere.txt", "point input at"), (latin, "set encoding_errors=")):
        cfg = compose_config(tmp_path, f"ckpt_path={tmp_path / 'x.ckpt'}", f"input={source}",
                             config_name="predict")  # fmt: skip
        with pytest.raises((FileNotFoundError, ValueError), match=error) as err:
            predict(cfg)  # the rows are read before the (missing) checkpoint is
        assert "data." not in str(err.value)
