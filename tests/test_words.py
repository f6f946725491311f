"""Word-level preprocessing (分词, 去停用词): segmentation and stopwords on Chinese and English, the
settings in the checkpoint, and gptlab-eval / gptlab-predict applying them from it."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest
import torch

from gptlab.checkpoints.fit import check_fits
from gptlab.checkpoints.read import Checkpoint
from gptlab.data.classification import ClassificationDataModule
from gptlab.predict import predict
from gptlab.run.hydra import RunStopped
from gptlab.tasks.classify import predict_probabilities
from gptlab.tasks.registry import load_module
from gptlab.tokenization import CharTokenizer
from gptlab.tokenization import words as words_module
from gptlab.tokenization.words import WordPreprocessing
from gptlab.train import check_resumable, train
from tests.conftest import compose_config
from tests.test_classification import TINY_CLASSIFIER, tiny_classifier, write_rows

# the jieba tests need the optional extra zh (make install includes it)
needs_jieba = pytest.mark.skipif(importlib.util.find_spec("jieba") is None, reason="pip install -e '.[zh]'")

CHINESE = "我不喜欢这部电影，它的故事太无聊了。"
ENGLISH = "The film was NOT good, and I didn't like it at all."


@needs_jieba
def test_jieba_segments_chinese_into_words():
    assert WordPreprocessing(words="jieba")(CHINESE) == "我 不 喜欢 这部 电影 ， 它 的 故事 太 无聊 了 。"


@needs_jieba
def test_chinese_stopwords_go_and_negations_stay():
    assert (
        WordPreprocessing(words="jieba", stopwords=["zh"])(CHINESE) == "不 喜欢 这部 电影 ， 故事 太 无聊 。"
    )


def test_english_words_stopwords_and_lowercase():
    regex = WordPreprocessing(words="regex", stopwords=["en"])
    assert regex(ENGLISH) == "film NOT good , didn't like ."  # stopwords match whatever the case
    assert (
        WordPreprocessing(words="regex", stopwords=["en"], lowercase=True)(ENGLISH)
        == "film not good , didn't like ."
    )
    assert WordPreprocessing(words="whitespace", extra_stopwords=["film"])(ENGLISH) == (
        "The was NOT good, and I didn't like it at all."
    )
    assert WordPreprocessing(lowercase=True)(ENGLISH) == ENGLISH.lower()
    assert WordPreprocessing()(ENGLISH) == ENGLISH and not WordPreprocessing().active


@needs_jieba
def test_mixed_text_with_jieba_keeps_latin_words():
    assert (
        WordPreprocessing(words="jieba", stopwords=["zh", "en"], lowercase=True)("我的GPU is fast")
        == "gpu fast"
    )


def test_a_stopword_file_is_read_and_travels_as_words(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my list\nfilm\n  Good \n\n", encoding="utf-8")
    prep = WordPreprocessing(words="regex", stopwords=[str(path)])
    assert prep(ENGLISH) == "The was NOT , and I didn't like it at all ."
    hparams = prep.to_hparams()
    assert hparams["stopwords"] == [] and hparams["extra_stopwords"] == ["film", "good"]
    path.unlink()  # the checkpoint's settings need the file no more
    assert WordPreprocessing.from_any(hparams)(ENGLISH) == prep(ENGLISH)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"stopwords": ["en"]}, ValueError, r"stopwords removes words, so the text must be split.*words to"),
        ({"words": "jeiba"}, ValueError, r"words='jeiba' is not one of \('none', 'whitespace', 'regex'"),
        ({"words": "regex", "pattern": "(["}, ValueError, r"pattern='\(\[' is not a regex"),
        (
            {"words": "regex", "stopwords": ["fr"]},
            FileNotFoundError,
            r"'fr' is neither a bundled list \(\['en', 'zh'\]\)",
        ),
    ],
)
def test_bad_settings_name_the_fix(settings, error, message):
    with pytest.raises(error, match=message):
        WordPreprocessing(**settings)


def test_jieba_missing_names_the_extra(monkeypatch):
    monkeypatch.setattr(words_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"words=jieba needs the jieba package.*pip install -e '.\[zh\]'"):
        WordPreprocessing(words="jieba")


ROWS = [
    {"text": "这部电影很好看，我很喜欢。", "label": "好评"},
    {"text": "The film was great, I loved it.", "label": "好评"},
    {"text": "故事太无聊了，不推荐。", "label": "差评"},
    {"text": "The film was NOT good at all.", "label": "差评"},
] * 6
SETTINGS = {"words": "jieba", "stopwords": ["zh", "en"], "lowercase": True}


@needs_jieba
def test_the_datamodule_preprocesses_every_text_and_hands_the_settings_on(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", ROWS)
    dm = ClassificationDataModule(
        tokenizer=CharTokenizer(), block_size=64, path=str(path), preprocessing=SETTINGS, val_fraction=0.25
    )
    dm.setup("fit")
    read = {
        dm.tokenizer.decode(item["input_ids"].tolist()) for split in dm.datasets.values() for item in split
    }
    prep = WordPreprocessing(**SETTINGS)
    assert read == {prep(row["text"]) for row in ROWS}
    assert "film great , loved ." in read and "故事 太 无聊 ， 不 推荐 。" in read
    assert dm.model_kwargs()["preprocessing"] == prep.to_hparams()


def test_a_checkpoint_with_other_preprocessing_cannot_be_resumed(tmp_path):
    model = tiny_classifier(preprocessing={"words": "regex", "lowercase": True})
    checkpoint = {"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}
    path = tmp_path / "run.ckpt"
    torch.save(checkpoint, path)
    check_fits(Checkpoint.read(path), tiny_classifier(preprocessing={"words": "regex", "lowercase": True}))
    with pytest.raises(ValueError, match=r"trained on texts preprocessed with words=regex, lowercase=True"):
        check_fits(Checkpoint.read(path), tiny_classifier())
    # gptlab-train refuses it before the run directory is touched, in one line
    check_resumable(str(path), tiny_classifier(preprocessing={"words": "regex", "lowercase": True}))
    with pytest.raises(RunStopped, match=r"cannot resume .*run.ckpt: it was trained on texts"):
        check_resumable(str(path), tiny_classifier())


@needs_jieba
def test_train_then_predict_and_eval_apply_the_stored_preprocessing(tmp_path):
    data = write_rows(tmp_path / "d.jsonl", ROWS)
    cfg = compose_config(
        tmp_path, "experiment=austen_scratch", f"data.path={data}", "data.val_fraction=0.25",
        "data.test_fraction=0.25", "data.preprocessing.words=jieba", "data.preprocessing.stopwords=[zh,en]",
        "data.preprocessing.lowercase=true", *TINY_CLASSIFIER, "model.backbone.block_size=32",
        "trainer.max_steps=2", "trainer.val_check_interval=2",
    )  # fmt: skip
    train(cfg)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = load_module(ckpt)
    prep = WordPreprocessing(**SETTINGS)
    assert model.hparams["preprocessing"] == prep.to_hparams()

    texts = ["我很喜欢这个故事！", "THE FILM WAS NOT GOOD.", "的了"]  # the last is all stopwords
    inputs = tmp_path / "new.txt"
    inputs.write_text("\n".join(texts) + "\n", encoding="utf-8")
    output = tmp_path / "preds.csv"
    predict(
        compose_config(
            tmp_path, f"ckpt_path={ckpt}", f"input={inputs}", f"output={output}", config_name="predict"
        )
    )
    with output.open(encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    assert rows[2]["label"] == ""  # nothing left after preprocessing
    got = torch.tensor([[float(row["p_好评"]), float(row["p_差评"])] for row in rows[:2]])
    by_hand = predict_probabilities(model, [prep(t) for t in texts[:2]], preprocessed=True)
    torch.testing.assert_close(got, by_hand, atol=1e-6, rtol=0)
    torch.testing.assert_close(predict_probabilities(model, texts[:2]), by_hand)

    # gptlab-eval: the data config says words=none, the checkpoint's preprocessing wins
    from gptlab.eval import evaluate

    eval_cfg = compose_config(tmp_path, f"ckpt_path={ckpt}", f"data.path={data}", "data.val_fraction=0.25",
                              "data.test_fraction=0.25", "logger=csv", config_name="eval")  # fmt: skip
    assert {"test/acc", "test/f1"} <= set(evaluate(eval_cfg))
    dm = ClassificationDataModule(block_size=32, path=str(data), **model.data_kwargs())
    assert dm.preprocessing.to_hparams() == prep.to_hparams()
