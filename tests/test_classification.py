"""The classifier: pooling, padding, losses, fine-tuning from a checkpoint, its data and its errors."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gptlab.callbacks.throughput import batch_tokens
from gptlab.checkpoints import fit
from gptlab.checkpoints import read as checkpoint_module
from gptlab.checkpoints.fit import CheckpointMismatch, check_fits
from gptlab.checkpoints.read import Checkpoint
from gptlab.data.classification import ClassificationDataModule, stratified_split
from gptlab.data.datasets import TextClassificationDataset, pad_collate
from gptlab.data.readers import CorpusFormatError
from gptlab.data.sampling import BatchPlan, BucketBatchSampler
from gptlab.models.heads import ClassificationHead
from gptlab.tasks.classification import GPTClassifier
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module
from gptlab.tokenization import CharTokenizer, UnknownCharactersError
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES
from tests.test_model import BACKBONE

LABELS = ["comedy", "tragedy"]
TEXTS = ["All's well that ends well.", "To be, or not to be?", "Much ado.", "Out, damned spot! Out!"]
AUSTEN = Path(__file__).resolve().parents[1] / "data" / "austen_novel.jsonl"
# TINY_OVERRIDES without the LM's text sampler, which classification experiments do not have
# model.backbone.bias: test_model's BACKBONE (the shapes of the pretrained checkpoints built here) has biases
TINY_CLASSIFIER = [
    *(o for o in TINY_OVERRIDES if not o.startswith("callbacks.text_sampler")),
    "model.backbone.bias=true",
]


def char_tokenizer(texts=TEXTS) -> CharTokenizer:
    tokenizer = CharTokenizer()
    tokenizer.fit(texts)
    return tokenizer


def tiny_classifier(tokenizer=None, label_names=LABELS, **kwargs) -> GPTClassifier:
    torch.manual_seed(0)
    tokenizer = tokenizer or char_tokenizer()
    kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=1e-2))
    return GPTClassifier(tokenizer.vocab_size, BACKBONE, label_names, tokenizer=tokenizer, **kwargs)


def batch_of(model: GPTClassifier, texts=TEXTS, labels=(0, 1, 0, 1)) -> dict[str, torch.Tensor]:
    dataset = TextClassificationDataset(texts, list(labels), tokenizer=model.tokenizer, max_length=16)
    return pad_collate([dataset[i] for i in range(len(dataset))])


def save_checkpoint(model: L.LightningModule, path: Path) -> Path:
    """A real Lightning checkpoint of ``model`` after one training step."""
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    if isinstance(model, GPTClassifier):
        loader = DataLoader([batch_of(model)], batch_size=None)
    else:
        ids = torch.randint(0, model.config.vocab_size, (2, 17))
        loader = DataLoader([(ids[:, :-1], ids[:, 1:])], batch_size=None)
    trainer.fit(model, train_dataloaders=loader)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture
def lm_checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    tokenizer = char_tokenizer()
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    return save_checkpoint(lm, tmp_path / "lm.ckpt")


# --- the head and the module -------------------------------------------------------------------------


def test_last_token_pooling_picks_the_last_non_pad_position():
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]], dtype=torch.bool)
    pooled = ClassificationHead(4, 2, pooling="last").pool(hidden, mask)
    torch.testing.assert_close(pooled, torch.stack([hidden[0, 2], hidden[1, 4], hidden[2, 0]]))
    mean = ClassificationHead(4, 2, pooling="mean").pool(hidden, mask)
    torch.testing.assert_close(mean[0], hidden[0, :3].mean(0))
    most = ClassificationHead(4, 2, pooling="max").pool(hidden, mask)
    torch.testing.assert_close(most[0], hidden[0, :3].amax(0))
    torch.testing.assert_close(most[2], hidden[2, 0])


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_padding_does_not_change_a_texts_logits(pooling):
    model = tiny_classifier(pooling=pooling).eval()
    alone = batch_of(model, TEXTS[2:3], [0])
    padded = batch_of(model, TEXTS[:3], [0, 1, 0])  # "Much ado." padded to the longest text
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1]
    with torch.no_grad():
        expected = model.classify(alone["input_ids"], alone["attention_mask"])[0]
        got = model.classify(padded["input_ids"], padded["attention_mask"])[2]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_auxiliary_lm_loss_is_trained_on_but_kept_apart_from_the_classification_loss(monkeypatch):
    batch = batch_of(tiny_classifier())
    loss, lm_loss, logits = tiny_classifier(lm_loss_weight=0.0)._step(batch)
    assert lm_loss is None
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch["labels"]))
    model = tiny_classifier(lm_loss_weight=0.5)
    loss, lm_loss, logits = model._step(batch)
    ce = F.cross_entropy(logits, batch["labels"])
    hidden = model.backbone(batch["input_ids"])
    lm_logits, targets = model.lm_head(hidden)[:, :-1], batch["input_ids"][:, 1:]
    real = batch["attention_mask"][:, 1:]  # targets that are text, not padding
    lm = F.cross_entropy(lm_logits[real], targets[real])
    torch.testing.assert_close(loss, ce)  # val/loss, test/loss: the classification loss alone
    torch.testing.assert_close(lm_loss, lm)  # logged as */lm_loss
    monkeypatch.setattr(model, "logs_this_step", lambda batch_idx: False)
    torch.testing.assert_close(model.training_step(batch, 0), ce + 0.5 * lm)  # what is optimized


def test_class_weights_and_label_smoothing_reach_the_loss():
    batch = batch_of(tiny_classifier())
    model = tiny_classifier(class_weights=[1.0, 3.0], label_smoothing=0.1)
    loss, _, logits = model._step(batch)
    expected = F.cross_entropy(logits, batch["labels"], weight=torch.tensor([1.0, 3.0]), label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match=r"class_weights has 3 values for 2 classes"):
        tiny_classifier(class_weights=[1.0, 1.0, 1.0])


def optimizer_step(model: GPTClassifier) -> None:
    optimizer = model.configure_optimizers()["optimizer"]
    loss, _, _ = model._step(batch_of(model))
    loss.backward()
    optimizer.step()


def test_linear_probe_leaves_the_backbone_unchanged():
    model = tiny_classifier(trainable_blocks=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer_step(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("backbone."))
    assert not torch.equal(before["head.linear.weight"], after["head.linear.weight"])


def test_trainable_blocks_unfreezes_only_the_last_blocks():
    model = tiny_classifier(trainable_blocks=1)
    trainable = {name for name, p in model.backbone.named_parameters() if p.requires_grad}
    modules = {
        ".".join(name.split(".")[:2]) if name.startswith("blocks") else name.split(".")[0]
        for name in trainable
    }
    assert modules == {"blocks.1", "ln_f"}
    with pytest.raises(ValueError, match=r"trainable_blocks=3 must be between 0 .* and n_layer=2"):
        tiny_classifier(trainable_blocks=3)


def test_layer_lr_decay_lowers_the_learning_rate_with_depth():
    model = tiny_classifier(layer_lr_decay=0.5)
    optimizer = model.configure_optimizers()["optimizer"]
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert lr_of[id(model.head.linear.weight)] == pytest.approx(1e-2)
    assert lr_of[id(model.backbone.ln_f.weight)] == pytest.approx(1e-2)
    assert lr_of[id(model.backbone.blocks[1].attn.qkv.weight)] == pytest.approx(1e-2 * 0.5)
    assert lr_of[id(model.backbone.blocks[0].attn.qkv.weight)] == pytest.approx(1e-2 * 0.25)
    assert lr_of[id(model.backbone.wte.weight)] == pytest.approx(1e-2 * 0.125)
    assert len(lr_of) == sum(1 for _ in model.parameters())


# --- fine-tuning from a checkpoint -------------------------------------------------------------------


def test_pretrained_backbone_equals_the_checkpoints_and_the_head_is_fresh(lm_checkpoint):
    checkpoint = torch.load(lm_checkpoint, weights_only=True)
    model = tiny_classifier(pretrained=str(lm_checkpoint))
    for name, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, checkpoint["state_dict"][f"backbone.{name}"], rtol=0, atol=0)
    assert not any(k.startswith("head.") for k in checkpoint["state_dict"])
    assert "pretrained" not in model.hparams  # the weights live in this model's checkpoints from now on


def test_pretrained_with_a_smaller_block_size_takes_the_first_positions(lm_checkpoint):
    tokenizer = char_tokenizer()
    model = GPTClassifier(
        tokenizer.vocab_size,
        {**BACKBONE, "block_size": 8},
        LABELS,
        pretrained=lm_checkpoint,
        tokenizer=tokenizer,
    )
    wpe = torch.load(lm_checkpoint, weights_only=True)["state_dict"]["backbone.wpe.weight"]
    torch.testing.assert_close(model.backbone.wpe.weight.detach(), wpe[:8])


def test_pretrained_checkpoint_that_does_not_fit_is_refused(lm_checkpoint, tmp_path):
    other = char_tokenizer(["a different vocabulary entirely"])
    with pytest.raises(
        ValueError, match=r"different tokenizer \(char, \d+ tokens\) .* configured with \(char"
    ):
        GPTClassifier(other.vocab_size, BACKBONE, LABELS, pretrained=lm_checkpoint, tokenizer=other)
    tokenizer = char_tokenizer()
    with pytest.raises(ValueError, match=r"does not fit model.backbone: n_layer=3 \(checkpoint: 2\)"):
        GPTClassifier(tokenizer.vocab_size, {**BACKBONE, "n_layer": 3}, LABELS, pretrained=lm_checkpoint,
                      tokenizer=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match=r"block_size=32 \(checkpoint: at most 16\)"):
        GPTClassifier(tokenizer.vocab_size, {**BACKBONE, "block_size": 32}, LABELS, pretrained=lm_checkpoint,
                      tokenizer=tokenizer)  # fmt: skip
    with pytest.raises(FileNotFoundError, match="checkpoint '.*missing.ckpt' does not exist"):
        tiny_classifier(pretrained=tmp_path / "missing.ckpt")


def test_pretrained_backbone_may_take_other_run_settings(lm_checkpoint):
    # attention_fp32, pad_vocab_to_multiple and dropout change how the run computes, not the weights
    saved = torch.load(lm_checkpoint, weights_only=True)["state_dict"]
    tokenizer = char_tokenizer()
    backbone = {**BACKBONE, "attention_fp32": True, "pad_vocab_to_multiple": 1, "dropout": 0.1}
    model = GPTClassifier(
        tokenizer.vocab_size, backbone, LABELS, pretrained=lm_checkpoint, tokenizer=tokenizer
    )
    assert model.config.attention_fp32 and model.config.padded_vocab_size == tokenizer.vocab_size
    for name, value in model.backbone.state_dict().items():
        expected = saved[f"backbone.{name}"]
        if name == "wte.weight":  # the checkpoint's padding rows (64 in all) are dropped
            assert expected.size(0) == 64 and value.size(0) == tokenizer.vocab_size
            expected = expected[: tokenizer.vocab_size]
        torch.testing.assert_close(value, expected, rtol=0, atol=0)


def test_pretrained_classifier_must_have_the_same_labels(tmp_path):
    path = save_checkpoint(tiny_classifier(), tmp_path / "cls.ckpt")
    with pytest.raises(ValueError, match=r"classifies into \['comedy', 'tragedy'\], but this data has labels "
                       r"\['comedy', 'history', 'tragedy'\]"):  # fmt: skip
        tiny_classifier(label_names=["comedy", "history", "tragedy"], pretrained=path)
    same = tiny_classifier(pretrained=path)  # same labels: fine-tuning goes on, head included
    saved = torch.load(path, weights_only=True)["state_dict"]
    torch.testing.assert_close(same.head.linear.weight.detach(), saved["head.linear.weight"])


def test_label_map_survives_the_checkpoint_round_trip(tmp_path):
    model = tiny_classifier(label_names=["b-side", "a-side"], pooling="mean")
    path = save_checkpoint(model, tmp_path / "cls.ckpt")
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint["hyper_parameters"]["label_names"] == ["b-side", "a-side"]
    restored = load_module(path)
    assert isinstance(restored, GPTClassifier) and restored.label_names == ["b-side", "a-side"]
    assert restored.head.pooling == "mean"
    batch = batch_of(model)
    model.eval()
    torch.testing.assert_close(restored.predict_step(batch, 0), model.predict_step(batch, 0))
    with pytest.raises(ValueError, match="holds a GPTModule, not a GPTClassifier"):
        lm = GPTModule(10, BACKBONE, functools.partial(torch.optim.AdamW))
        load_module(save_checkpoint(lm, tmp_path / "lm.ckpt"), expected=GPTClassifier)


def test_loading_a_checkpoint_with_another_tokenizer_names_both(lm_checkpoint):
    checkpoint = Checkpoint.read(lm_checkpoint)
    configured = char_tokenizer(["only these letters"])
    model = GPTModule(configured.vocab_size, BACKBONE, tokenizer=configured)
    saved_size = checkpoint.hparams["vocab_size"]
    with pytest.raises(
        CheckpointMismatch,
        match=rf"^it has a different tokenizer \(char, {saved_size} tokens\) from the one this run was "
        rf"configured with \(char, {configured.vocab_size} tokens\); use the data and model config",
    ):
        check_fits(checkpoint, model)


def test_fine_tune_with_another_attention_fp32_reads_and_checks_the_checkpoint_once(
    compose_train, austen_sample, tmp_path, monkeypatch
):
    tokenizer = char_tokenizer([AUSTEN.read_text(encoding="utf-8")[:3000]])
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    pretrained = save_checkpoint(lm, tmp_path / "pretrain.ckpt")
    reads = []
    read = checkpoint_module.read_checkpoint
    monkeypatch.setattr(
        checkpoint_module, "read_checkpoint", lambda *a, **k: reads.append(a[0]) or read(*a, **k)
    )
    checks, real_check = [], fit.check_fits
    monkeypatch.setattr(fit, "check_fits", lambda *a, **k: checks.append(a[0].path) or real_check(*a, **k))
    cfg = compose_train("experiment=austen_finetune", "debug=fdr", f"data.path={austen_sample}",
                        f"model.pretrained={pretrained}", "model.backbone.attention_fp32=true",
                        "data.unknown_chars=drop", *TINY_CLASSIFIER)  # fmt: skip
    assert 0 <= train(cfg) <= 1
    assert reads == [str(pretrained)]  # the tokenizer and the weights came from one read
    assert checks == [pretrained]  # and one check that they fit the classifier and its data


# --- data --------------------------------------------------------------------------------------------


def test_dataset_from_plain_python_truncates_head_or_tail():
    tokenizer = char_tokenizer()
    head = TextClassificationDataset(TEXTS, ["comedy", "tragedy"] * 2, tokenizer=tokenizer, max_length=5,
                                     label_names=LABELS)  # fmt: skip
    assert tokenizer.decode(head[1]["input_ids"].tolist()) == "To be" and head[1]["label"] == 1
    tail = TextClassificationDataset(TEXTS, tokenizer=tokenizer, max_length=5, truncation="tail")
    assert tokenizer.decode(tail[1]["input_ids"].tolist()) == "o be?" and "label" not in tail[1]
    with pytest.raises(ValueError, match=r"labels \['farce'\] are not among label_names"):
        TextClassificationDataset(TEXTS[:1], ["farce"], tokenizer=tokenizer, max_length=5, label_names=LABELS)


def test_unknown_characters_are_dropped_or_explained():
    tokenizer = char_tokenizer(["abc "])
    with pytest.raises(UnknownCharactersError, match=r"\['£'\].*set data.unknown_chars=drop"):
        TextClassificationDataset(["a £ cab"], tokenizer=tokenizer, max_length=16)
    dataset = TextClassificationDataset(["a £ cab"], tokenizer=tokenizer, max_length=16, unknown_chars="drop")
    assert tokenizer.decode(dataset[0]["input_ids"].tolist()) == "a  cab" and dataset.dropped_chars == 1


def test_collate_pads_on_the_right_with_a_mask():
    tokenizer = char_tokenizer()
    dataset = TextClassificationDataset(TEXTS[:3], [0, 1, 0], tokenizer=tokenizer, max_length=64)
    batch = pad_collate([dataset[i] for i in range(3)])
    lengths = [len(t) for t in TEXTS[:3]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (
        batch["attention_mask"][2, : lengths[2]].all() and not batch["attention_mask"][2, lengths[2] :].any()
    )
    assert batch["labels"].tolist() == [0, 1, 0]


def test_bucket_batches_cover_every_row_once_with_similar_lengths():
    lengths = [i % 97 + 1 for i in range(1000)]
    sampler = BucketBatchSampler(lengths, BatchPlan(10), pool_batches=20, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 100
    assert sorted(i for b in batches for i in b) == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 10  # random batches would spread over ~80
    assert list(sampler) == batches  # an epoch's draw is fixed by (seed, epoch) ...
    sampler.set_epoch(1)
    assert list(sampler) != batches  # ... and a new epoch draws anew


def test_stratified_split_keeps_label_proportions():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    split = stratified_split(labels, 0.1, 0.2, seed=3)
    assert sorted(split["train"] + split["val"] + split["test"]) == list(range(100))
    assert [sum(labels[i] == c for i in split["val"]) for c in "abc"] == [5, 3, 2]
    assert [sum(labels[i] == c for i in split["test"]) for c in "abc"] == [10, 6, 4]
    assert split == stratified_split(labels, 0.1, 0.2, seed=3) != stratified_split(labels, 0.1, 0.2, seed=4)


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(n: int, labels=("x", "y")) -> list[dict]:
    return [{"text": f"text number {i}", "label": labels[i % len(labels)]} for i in range(n)]


def datamodule(tmp_path, **kwargs) -> ClassificationDataModule:
    dm = ClassificationDataModule(tokenizer=CharTokenizer(), block_size=16, batch_size=4, **kwargs)
    dm.setup("fit")
    return dm


def test_one_file_is_split_and_labels_are_sorted_ids(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", rows_of(40, labels=("zebra", "ant")))
    dm = datamodule(tmp_path, path=str(path), val_fraction=0.25, test_fraction=0.25)
    assert dm.model_kwargs()["label_names"] == ["ant", "zebra"]
    assert {name: len(d) for name, d in dm.datasets.items()} == {"train": 20, "val": 10, "test": 10}
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["input_ids"].shape[0] == 4


def test_separate_files_and_the_csv_text_field(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("body,novel\nhello there,a\ngood bye,b\nhello again,a\n", encoding="utf-8")
    val = tmp_path / "val.csv"
    val.write_text("body,novel\nhello,b\n", encoding="utf-8")
    dm = datamodule(
        tmp_path, train_path=str(train), val_path=str(val), text_field="body", label_field="novel"
    )
    assert len(dm.datasets["train"]) == 3 and dm.datasets["test"] is dm.datasets["val"]


def test_missing_text_or_label_column_is_named(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\nhi,a\n", encoding="utf-8")
    with pytest.raises(
        CorpusFormatError, match=r"has no column 'text' \(its header is \['sentence', 'label'\]\)"
    ):
        datamodule(tmp_path, path=str(path))
    jsonl = write_rows(tmp_path / "d.jsonl", [{"text": "hi", "novel": "a"}])
    with pytest.raises(CorpusFormatError, match=r"line 1 has no field 'label'.*data.label_field"):
        datamodule(tmp_path, path=str(jsonl))


def test_empty_texts_are_skipped_and_counted_or_refused(tmp_path, caplog):
    rows = rows_of(20)
    rows[3]["text"] = "   "
    rows[7]["text"] = None
    path = write_rows(tmp_path / "d.jsonl", rows)
    with caplog.at_level("INFO"):
        dm = datamodule(tmp_path, path=str(path), val_fraction=0.2, test_fraction=0.2)
    assert sum(len(d) for name, d in dm.datasets.items()) == 18
    assert "skipped 2 row(s) with an empty text" in caplog.text and "line 4" in caplog.text
    with pytest.raises(CorpusFormatError, match=r"d.jsonl' line 4 has an empty text; .*data.empty_text=skip"):
        datamodule(tmp_path, path=str(path), empty_text="error")


def test_labels_that_training_never_saw_are_listed(tmp_path):
    train = write_rows(tmp_path / "train.jsonl", rows_of(6))
    val = write_rows(tmp_path / "val.jsonl", rows_of(2) + rows_of(3, labels=("w", "v", "w")))
    with pytest.raises(ValueError, match=r"labels \['v', 'w'\] appear in the val split but never in train"):
        datamodule(tmp_path, train_path=str(train), val_path=str(val))


def test_a_single_class_training_set_is_refused(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", rows_of(10, labels=("only",)))
    with pytest.raises(ValueError, match=r"training set has a single class \['only'\]"):
        datamodule(tmp_path, path=str(path))


def test_empty_or_nan_labels_name_the_file_and_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nfine,a\nno label here,\nfine,b\n", encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"d.csv' line 3 has an empty label \(''\)"):
        datamodule(tmp_path, path=str(path))
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "fine", "label": "a"}\n{"text": "bad", "label": NaN}\n', encoding="utf-8")
    with pytest.raises(CorpusFormatError, match=r"d.jsonl' line 2 has an empty label \('nan'\)"):
        datamodule(tmp_path, path=str(jsonl))


def test_undecodable_bytes_name_the_offset_or_are_replaced(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"text,label\n" + b"good,a\n" * 10 + b"bad \xff byte,b\n" + b"good,b\n" * 9)
    with pytest.raises(CorpusFormatError, match=r"not valid UTF-8 at byte offset 85 \(line 12\)"):
        datamodule(tmp_path, path=str(path))
    dm = datamodule(tmp_path, path=str(path), encoding_errors="replace")
    texts = [dm.tokenizer.decode(d["input_ids"].tolist()) for d in dm.datasets["train"]]
    texts += [dm.tokenizer.decode(d["input_ids"].tolist()) for d in dm.datasets["val"]]
    texts += [dm.tokenizer.decode(d["input_ids"].tolist()) for d in dm.datasets["test"]]
    assert "bad \ufffd byte" in texts


# --- the real experiments, end to end ----------------------------------------------------------------


@pytest.fixture
def austen_sample(tmp_path) -> Path:
    """Ten paragraphs of each novel, cut to 200 characters: the real data, small enough for seconds."""
    rows, seen = [], {}
    for line in AUSTEN.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if seen.get(row["label"], 0) < 10:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            rows.append({"text": row["text"][:200], "label": row["label"]})
    return write_rows(tmp_path / "austen.jsonl", rows)


def test_fast_dev_run_of_austen_scratch(compose_train, austen_sample):
    cfg = compose_train(
        "experiment=austen_scratch", "debug=fdr", f"data.path={austen_sample}", *TINY_CLASSIFIER
    )
    assert 0 <= train(cfg) <= 1  # optimized_metric: val/acc


def test_fast_dev_run_of_austen_finetune_from_a_pretraining_checkpoint(
    compose_train, austen_sample, tmp_path
):
    tokenizer = char_tokenizer([AUSTEN.read_text(encoding="utf-8")[:3000]])  # lacks some characters
    lm = GPTModule(tokenizer.vocab_size, BACKBONE, functools.partial(torch.optim.AdamW), tokenizer=tokenizer)
    pretrained = save_checkpoint(lm, tmp_path / "pretrain.ckpt")
    cfg = compose_train("experiment=austen_finetune", "debug=fdr", f"data.path={austen_sample}",
                        f"model.pretrained={pretrained}", "data.unknown_chars=drop",
                        *TINY_CLASSIFIER)  # fmt: skip
    assert 0 <= train(cfg) <= 1


def test_throughput_counts_a_padded_batchs_real_tokens_only():
    model = tiny_classifier()
    batch = batch_of(model)
    lengths = [len(model.tokenizer.encode(text)[:16]) for text in TEXTS]
    assert len(set(lengths)) > 1 and batch["input_ids"].shape == (4, max(lengths))  # padded
    assert model.flops_per_batch is None  # before any batch
    model.on_train_batch_start(batch, 0)
    expected = sum(n * model.backbone.flops_per_token(seq_len=n) for n in lengths)
    assert model.flops_per_batch == expected
    padded = batch["input_ids"].numel() * model.backbone.flops_per_token(seq_len=max(lengths))
    assert model.flops_per_batch < padded
    assert batch_tokens(batch) == sum(lengths) < batch["input_ids"].numel()

    lm = GPTModule(50, BACKBONE)
    windows = torch.randint(0, 50, (3, 8))
    lm.on_train_batch_start((windows, windows), 0)
    assert lm.flops_per_batch == 3 * 8 * lm.backbone.flops_per_token(seq_len=8)
    assert batch_tokens((windows, windows)) == 24
