"""Language-model evaluation across tokenizers: bits per byte, evaluation corpora, multiple choice."""

from __future__ import annotations

import importlib.util
import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from gptlab import CONFIG_DIR
from gptlab.callbacks.choice_eval import (
    ChoiceItem,
    choice_log_likelihoods,
    read_choice_task,
    score_choice_task,
)
from gptlab.data.datamodules import PretrainDataModule
from gptlab.tasks.lm import GPTModule
from gptlab.tokenization import BPETokenizer, ByteTokenizer, CharTokenizer, UnknownCharactersError
from tests.conftest import CHINESE

BACKBONE = {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16}
TASK = CONFIG_DIR.parent / "data" / "shakespeare_next_line.jsonl"
TOKENIZERS = {"char": CharTokenizer, "byte": ByteTokenizer, "bpe": lambda: BPETokenizer(300)}


def prepared(corpus, tmp_path, tokenizer, **kwargs) -> PretrainDataModule:
    dm = PretrainDataModule(
        str(corpus), tokenizer, block_size=16, batch_size=4, cache_dir=str(tmp_path / "cache"), **kwargs
    )
    dm.prepare_data()
    dm.setup("validate")
    return dm


def validate(model: GPTModule, dm: PretrainDataModule) -> dict[str, float]:
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, use_distributed_sampler=False,
    )  # fmt: skip
    trainer.validate(model, datamodule=dm, verbose=False)
    return {name: float(value) for name, value in trainer.callback_metrics.items()}


def by_hand(model: GPTModule, windows) -> tuple[float, float]:
    """(mean loss per token, bits per byte) from the model's own per-token losses on ``windows``."""
    sizes = torch.tensor(model.tokenizer.token_bytes())
    nats = total = text_bytes = 0.0
    with torch.no_grad():
        for index in range(len(windows)):
            x, y = windows[index]
            losses = F.cross_entropy(model(x[None])[0], y, reduction="none")
            total += losses.sum().item()
            nats += losses[sizes[y] > 0].sum().item()
            text_bytes += sizes[y].sum().item()
    return total / (len(windows) * windows.block_size), nats / math.log(2) / text_bytes


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_bpb_is_the_models_own_losses_over_the_bytes_of_the_same_text(corpus, tmp_path, kind):
    dm = prepared(corpus, tmp_path, TOKENIZERS[kind]())
    torch.manual_seed(0)
    model = GPTModule(dm.tokenizer.vocab_size, BACKBONE, tokenizer=dm.tokenizer).eval()
    metrics = validate(model, dm)
    loss, bpb = by_hand(model, dm.datasets["val"])
    assert metrics["val/loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val/bpb"] == pytest.approx(bpb, rel=1e-5)


@pytest.mark.parametrize("kind", sorted(TOKENIZERS))
def test_a_uniform_model_scores_log2_vocab_per_token(corpus, tmp_path, kind):
    dm = prepared(corpus, tmp_path, TOKENIZERS[kind]())
    model = GPTModule(dm.tokenizer.vocab_size, BACKBONE, tokenizer=dm.tokenizer).eval()
    with torch.no_grad():
        model.backbone.wte.weight.zero_()  # tied head: every logit 0, every token equally likely
    metrics = validate(model, dm)
    val = dm.datasets["val"]
    sizes = torch.tensor(dm.tokenizer.token_bytes())
    targets = torch.cat([val[i][1] for i in range(len(val))])
    scored = (sizes[targets] > 0).sum().item()
    bytes_per_token = sizes[targets].sum().item() / scored
    vocab = dm.tokenizer.vocab_size
    assert metrics["val/loss"] == pytest.approx(math.log(vocab), rel=1e-5)
    assert metrics["val/bpb"] == pytest.approx(math.log2(vocab) / bytes_per_token, rel=1e-5)


def test_eval_sets_are_validated_beside_the_split_with_the_runs_tokenizer(corpus, tmp_path):
    poems = tmp_path / "poems"
    poems.mkdir()
    (poems / "a.txt").write_text(CHINESE * 3, encoding="utf-8")
    (poems / "b.txt").write_text(CHINESE[::-1] * 3, encoding="utf-8")
    dm = prepared(corpus, tmp_path, CharTokenizer(), eval_sets={"poems": str(poems / "*.txt")})
    torch.manual_seed(0)
    model = GPTModule(**dm.model_kwargs(), backbone=BACKBONE).eval()
    assert model.eval_sets == ["poems"]
    metrics = validate(model, dm)
    loss, bpb = by_hand(model, dm.datasets["poems"])
    assert metrics["val/poems/loss"] == pytest.approx(loss, rel=1e-5)
    assert metrics["val/poems/bpb"] == pytest.approx(bpb, rel=1e-5)
    assert by_hand(model, dm.datasets["val"])[1] == pytest.approx(metrics["val/bpb"], rel=1e-5)
    # the whole set, from its first token: CHINESE * 3 twice, joined by one end-of-text
    assert dm.datasets["poems"].start == 0 and len(dm.datasets["poems"]) == (2 * 3 * len(CHINESE)) // 16


def test_an_eval_set_name_must_make_a_metric_name(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"data.eval_sets name 'a/b' cannot be a metric name part"):
        PretrainDataModule(str(corpus), CharTokenizer(), block_size=16, eval_sets={"a/b": str(corpus)})


def shakespeare_model(seed: int = 0) -> GPTModule:
    text = (CONFIG_DIR.parent / "data" / "shakespeare_char.txt").read_text(encoding="utf-8")
    tokenizer = CharTokenizer()
    tokenizer.fit([text])
    torch.manual_seed(seed)
    backbone = {**BACKBONE, "block_size": 64}
    return GPTModule(tokenizer.vocab_size, backbone, tokenizer=tokenizer).eval()


def test_choice_scores_are_each_choices_log_likelihood_after_the_context():
    model = shakespeare_model()
    items = read_choice_task(TASK)[:5]
    for item in items:
        scores = choice_log_likelihoods(model, item)  # one right-padded batch, context cut to fit
        for choice, score in zip(item.choices, scores, strict=True):
            ids = model.tokenizer.encode(item.context + choice)[-65:]
            n = len(model.tokenizer.encode(choice))
            with torch.no_grad():
                log_probs = F.log_softmax(model(torch.tensor([ids[:-1]]))[0], dim=-1)
            expected = sum(log_probs[t - 1, ids[t]].item() for t in range(len(ids) - n, len(ids)))
            assert score.item() == pytest.approx(expected, rel=1e-4)


def test_acc_picks_the_highest_likelihood_and_acc_norm_the_highest_per_byte(monkeypatch):
    items = [
        ChoiceItem("a", ["x", "yyyy"], 0),  # summed: x wins; per byte: yyyy wins
        ChoiceItem("b", ["x", "yyyy"], 1),
        ChoiceItem("c", ["x", "yy", "zzz"], 2),
    ]
    scores = {"a": [-2.0, -4.0], "b": [-2.0, -4.0], "c": [-1.0, -3.0, -9.0]}
    monkeypatch.setattr(
        "gptlab.callbacks.choice_eval.choice_log_likelihoods",
        lambda model, item: torch.tensor(scores[item.context]),
    )
    result = score_choice_task(None, items)
    assert result == pytest.approx({"acc": 1 / 3, "acc_norm": 1 / 3, "chance": (1 / 2 + 1 / 2 + 1 / 3) / 3})


def test_the_bundled_task_is_rebuilt_identically_from_held_out_text():
    spec = importlib.util.spec_from_file_location(
        "make_task", CONFIG_DIR.parent / "data" / "make_next_line_task.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (CONFIG_DIR.parent / "data" / "shakespeare_char.txt").read_text(encoding="utf-8")
    built = module.build(text, items=200, seed=1337, held_out=0.1, context_chars=200)
    assert [json.loads(line) for line in TASK.read_text(encoding="utf-8").splitlines()] == built
    held_out = text[-len(text) // 10 :]
    for item in built:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        assert item["context"] + item["choices"][item["label"]] in held_out


def test_a_malformed_task_line_is_named(tmp_path):
    task = tmp_path / "task.jsonl"
    good = {"context": "a", "choices": ["b", "c"], "label": 0}
    task.write_text(json.dumps(good) + "\n" + json.dumps({**good, "choices": ["b"]}) + "\n")
    with pytest.raises(ValueError, match=r"task.jsonl line 2: expected .*2 or more non-empty str"):
        read_choice_task(task)


def test_an_eval_set_with_characters_the_vocabulary_lacks_is_named(corpus, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("Price: £3 (net)\n" * 20, encoding="utf-8")
    with pytest.raises(
        UnknownCharactersError, match=r"data.eval_sets.prices \('.*other.txt'\): .*tokenizer=byte"
    ):
        prepared(corpus, tmp_path, CharTokenizer(), eval_sets={"prices": str(other)})
