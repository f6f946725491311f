"""Hugging Face GPT-2 in and out: logits, generation and tokenizer parity with ``transformers``, the
import and export errors, the GPT-2 size presets and fine-tuning a local GPT-2 through the train recipe.

Every model is a tiny random one built here: nothing is downloaded.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf.errors import MissingMandatoryValue
from torch.utils.data import DataLoader

from gptlab.checkpoints.formats import export_hf, export_safetensors
from gptlab.checkpoints.hf import HFCheckpointError, load_hf_gpt2
from gptlab.checkpoints.read import read_checkpoint
from gptlab.export import export
from gptlab.models.gpt import GPT, GPTConfig
from gptlab.run.hydra import compose_config
from gptlab.tasks.classification import GPTClassifier
from gptlab.tasks.lm import GPTModule
from gptlab.tasks.registry import load_module, load_safetensors
from gptlab.tokenization import BPETokenizer, ByteTokenizer, CharTokenizer, GPT2Tokenizer
from gptlab.tokenization.hf_files import hf_tokenizer_files
from gptlab.train import train
from tests.conftest import TINY_OVERRIDES

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
GPT2_FILES = ROOT / "data" / "gpt2"
AUSTEN = ROOT / "data" / "austen_novel.jsonl"
TINY_HF = {"n_layer": 2, "n_head": 2, "n_embd": 32, "n_positions": 64}
TINY_BACKBONE = {"block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 32}
TEXTS = [
    "Hello, world! It's 2024 and I'll   say: don't panic.\n\n\tIndented\r\nline",
    "床前明月光，疑是地上霜。 Ünïcödé — emoji 🙂👍🏽 and numbers 3.14159",
]
PRESET_PARAMETERS = {  # GPT-2's published sizes: 50,257 tokens, learned positions, tied head
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "gpt2-large": 774_030_080,
    "gpt2-xl": 1_557_611_200,
}


def copy_gpt2_vocabulary(directory: Path) -> None:
    """data/gpt2's OpenAI files under Hugging Face's names (encoder.json is vocab.json's content)."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(GPT2_FILES / "encoder.json", directory / "vocab.json")
    shutil.copy(GPT2_FILES / "vocab.bpe", directory / "merges.txt")


def random_hf_gpt2(vocab_size: int = 100, seed: int = 0, **config) -> transformers.GPT2LMHeadModel:
    """A tiny GPT-2 whose every weight (biases and norms too) is random, so no mapping hides."""
    torch.manual_seed(seed)
    hf_config = transformers.GPT2Config(
        **{**TINY_HF, **config}, vocab_size=vocab_size, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def save_hf(model: transformers.GPT2LMHeadModel, directory: Path) -> Path:
    model.save_pretrained(directory)
    return directory


def logits_of(model: GPTModule | transformers.GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(ids)
    return out if isinstance(out, torch.Tensor) else out.logits


@pytest.fixture
def hf_dir(tmp_path) -> Path:
    return save_hf(random_hf_gpt2(), tmp_path / "hf")


@pytest.fixture
def hf_gpt2_vocab_dir(tmp_path) -> Path:
    """A tiny random GPT-2 with GPT-2's real vocabulary files beside it."""
    directory = save_hf(random_hf_gpt2(vocab_size=50257, seed=1), tmp_path / "hf_gpt2")
    copy_gpt2_vocabulary(directory)
    return directory


def fit_one_step(model: L.LightningModule, path: Path) -> Path:
    """A real Lightning checkpoint of a language model after one training step."""
    trainer = L.Trainer(
        max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0,
    )  # fmt: skip
    ids = torch.randint(0, model.config.vocab_size, (2, 17))
    trainer.fit(model, train_dataloaders=DataLoader([(ids[:, :-1], ids[:, 1:])], batch_size=None))
    trainer.save_checkpoint(path)
    return path


# --- import --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["gelu_new", "gelu"])
def test_imported_logits_equal_transformers(tmp_path, activation):
    reference = random_hf_gpt2(activation_function=activation)
    model = GPTModule(100, {"block_size": 64}, pretrained_hf=save_hf(reference, tmp_path / "hf")).eval()
    ids = torch.randint(0, 100, (3, 64))
    torch.testing.assert_close(logits_of(model, ids), logits_of(reference, ids), atol=1e-5, rtol=0)
    assert model.config.gelu_approximate == ("tanh" if activation == "gelu_new" else "none")


def test_the_exact_gelu_would_not_match_gpt2s_gelu_new(hf_dir):
    """Why gelu_approximate exists: the erf GELU on the same weights is measurably off."""
    config, state = load_hf_gpt2(hf_dir)
    tanh, erf = GPT(GPTConfig(**config)), GPT(GPTConfig(**{**config, "gelu_approximate": "none"}))
    tanh.load_state_dict(state)
    erf.load_state_dict(state)
    ids = torch.randint(0, 100, (2, 32))
    with torch.no_grad():
        assert (tanh(ids) - erf(ids)).abs().max() > 1e-4


def test_pytorch_bin_without_prefix_and_with_old_mask_buffers_loads(tmp_path):
    """Original GPT-2 files: pytorch_model.bin, names without "transformer.", attention mask buffers."""
    reference = random_hf_gpt2()
    directory = save_hf(reference, tmp_path / "hf")
    (directory / "model.safetensors").unlink()
    state = {k.removeprefix("transformer."): v for k, v in reference.state_dict().items()}
    for i in range(TINY_HF["n_layer"]):
        state[f"h.{i}.attn.bias"] = torch.ones(1, 1, 64, 64).tril()
    torch.save(state, directory / "pytorch_model.bin")
    model = GPTModule(100, {"block_size": 32}, pretrained_hf=directory).eval()
    ids = torch.randint(0, 100, (2, 32))  # a shorter block: the first positions
    torch.testing.assert_close(logits_of(model, ids), logits_of(reference, ids), atol=1e-5, rtol=0)


def test_padding_rows_of_the_embedding_are_zero_and_never_scored(hf_dir):
    model = GPTModule(100, {"block_size": 64, "pad_vocab_to_multiple": 64}, pretrained_hf=hf_dir)
    assert model.backbone.wte.weight.shape == (128, 32)
    assert not model.backbone.wte.weight[100:].any()
    assert logits_of(model, torch.zeros(1, 4, dtype=torch.long)).shape == (1, 4, 100)


def test_hparams_hold_the_full_config_and_the_checkpoint_outlives_the_directory(hf_dir, tmp_path):
    backbone = {"block_size": 64, "n_layer": 9, "dropout": 0.1, "attention_fp32": True}
    model = GPTModule(100, backbone, functools.partial(torch.optim.AdamW), pretrained_hf=hf_dir)
    assert model.hparams["backbone"]["n_layer"] == 2  # the checkpoint's, not the config's 9
    assert model.hparams["backbone"]["dropout"] == 0.1  # the run's choices
    assert model.hparams["backbone"]["attention_fp32"] and model.backbone.blocks[0].attn.attention_fp32
    assert "pretrained_hf" not in model.hparams
    checkpoint = fit_one_step(model, tmp_path / "lm.ckpt")
    shutil.rmtree(hf_dir)
    read_checkpoint(checkpoint)  # weights_only=True
    loaded = load_module(checkpoint).eval()
    ids = torch.randint(0, 100, (2, 16))
    torch.testing.assert_close(logits_of(loaded, ids), logits_of(model.eval(), ids))


def test_not_gpt2_names_the_model_type(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(HFCheckpointError, match=r"'llama' model, not GPT-2"):
        load_hf_gpt2(hf_dir)


def test_missing_weights_name_the_files_looked_for(hf_dir):
    (hf_dir / "model.safetensors").unlink()
    with pytest.raises(HFCheckpointError, match=r"looked for model\.safetensors, .*pytorch_model\.bin"):
        load_hf_gpt2(hf_dir)


def test_missing_config_says_what_the_directory_needs(tmp_path):
    with pytest.raises(HFCheckpointError, match=r"does not exist; pass a directory written by"):
        load_hf_gpt2(tmp_path / "nowhere")


def test_shape_mismatch_names_the_tensor_and_both_shapes(hf_dir):
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "n_inner": 64}))
    expected = r"tensor 'h\.0\.mlp\.c_fc\.weight' has shape \(32, 128\) but config\.json implies \(32, 64\)"
    with pytest.raises(HFCheckpointError, match=expected):
        load_hf_gpt2(hf_dir)


def test_block_size_beyond_n_positions_is_refused(hf_dir):
    with pytest.raises(HFCheckpointError, match=r"block_size=128 .* 64 positions \(n_positions\)"):
        GPTModule(100, {"block_size": 128}, pretrained_hf=hf_dir)


def test_a_tokenizer_larger_than_the_embedding_is_refused(hf_dir):
    with pytest.raises(HFCheckpointError, match=r"tokenizer has 200 tokens but .* embeds only 100"):
        GPTModule(200, {"block_size": 64}, pretrained_hf=hf_dir)


def test_pretrained_and_pretrained_hf_together_are_refused(hf_dir, tmp_path):
    with pytest.raises(ValueError, match=r"model\.pretrained and model\.pretrained_hf are both set"):
        GPTClassifier(100, {}, ["a", "b"], pretrained=tmp_path / "x.ckpt", pretrained_hf=hf_dir)


# --- tokenizer ----------------------------------------------------------------------------------------


def test_gpt2_tokenizer_ids_match_transformers(tmp_path):
    copy_gpt2_vocabulary(tmp_path)
    theirs = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)  # vocab.json + merges.txt
    ours = GPT2Tokenizer(str(GPT2_FILES))
    for text in TEXTS:
        assert ours.encode(text) == theirs.encode(text)
        assert ours.decode(ours.encode(text)) == text


@pytest.mark.parametrize("kind", ["char", "byte", "bpe", "gpt2"])
def test_exported_tokenizer_files_encode_as_gptlab_does(tmp_path, kind):
    if kind == "char":
        tokenizer = CharTokenizer()
        tokenizer.fit(TEXTS)
    elif kind == "bpe":
        tokenizer = BPETokenizer(vocab_size=300, min_frequency=1)
        tokenizer.fit(TEXTS * 3)
    else:
        tokenizer = ByteTokenizer() if kind == "byte" else GPT2Tokenizer(str(GPT2_FILES))
    for name, text in hf_tokenizer_files(tokenizer, model_max_length=64).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert theirs.encode(text) == ids
        assert theirs.decode(ids) == text
    assert theirs.eos_token_id == tokenizer.eot_id


# --- export -------------------------------------------------------------------------------------------


def test_export_of_an_imported_model_loads_in_transformers_with_equal_logits(hf_gpt2_vocab_dir, tmp_path):
    tokenizer = GPT2Tokenizer(str(hf_gpt2_vocab_dir))
    model = GPTModule(50257, {"block_size": 64}, tokenizer=tokenizer, pretrained_hf=hf_gpt2_vocab_dir)
    out = tmp_path / "export"
    export_hf(model.eval(), out)
    exported = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert exported.config.vocab_size == 50257  # gptlab's padding rows (up to 50,304) are dropped
    original = transformers.GPT2LMHeadModel.from_pretrained(hf_gpt2_vocab_dir).eval()
    ids = torch.randint(0, 50257, (2, 64))
    torch.testing.assert_close(logits_of(exported, ids), logits_of(model, ids), atol=1e-5, rtol=0)
    torch.testing.assert_close(logits_of(exported, ids), logits_of(original, ids), atol=1e-5, rtol=0)
    assert exported.config.activation_function == "gelu_new"
    assert transformers.AutoTokenizer.from_pretrained(out).encode(TEXTS[0]) == tokenizer.encode(TEXTS[0])


def test_gptlab_checkpoint_exports_through_the_cli_recipe_and_generates_the_same_text(tmp_path):
    torch.manual_seed(0)
    tokenizer = GPT2Tokenizer(str(GPT2_FILES))
    backbone = {**TINY_BACKBONE, "bias": False}  # gptlab's default: exported as GPT-2 with zero biases
    lm = GPTModule(50257, backbone, functools.partial(torch.optim.AdamW, lr=1e-3), tokenizer=tokenizer)
    with torch.no_grad():  # wider logits than the 0.02 init: greedy decoding meets no near-ties
        lm.backbone.wte.weight.normal_(0, 0.5)
    checkpoint = fit_one_step(lm, tmp_path / "lm.ckpt")
    out = tmp_path / "export"
    cfg = compose_config(f"ckpt_path={checkpoint}", "format=hf", f"out={out}", config_name="export")
    written = export(cfg)
    assert {f.name for f in written} >= {"config.json", "model.safetensors", "vocab.json", "merges.txt"}

    ours = load_module(checkpoint).eval()
    theirs = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    assert theirs.config.activation_function == "gelu"  # gptlab's default, the exact GELU
    ids = torch.randint(0, 50257, (2, 64))
    torch.testing.assert_close(logits_of(theirs, ids), logits_of(ours, ids), atol=1e-5, rtol=0)

    prompt = "The quick brown fox"
    prompt_ids = torch.tensor([tokenizer.encode(prompt)])
    theirs.generation_config.eos_token_id = None  # never stop early: 20 tokens from both
    generated = theirs.generate(prompt_ids, max_new_tokens=20, do_sample=False, pad_token_id=0)
    their_text = tokenizer.decode(generated[0, prompt_ids.size(1) :].tolist())
    assert generated.size(1) == prompt_ids.size(1) + 20
    assert ours.generate(prompt, max_new_tokens=20, top_k=1) == their_text

    with pytest.raises(FileExistsError, match=r"already holds files; .* overwrite=true"):
        export(cfg)


@pytest.mark.parametrize(
    ("switch", "named"),
    [
        ({"pos_embedding": "rope"}, "pos_embedding=rope"),
        ({"norm": "rmsnorm"}, "norm=rmsnorm"),
        ({"mlp": "swiglu"}, "mlp=swiglu"),
        ({"n_kv_head": 1}, "n_kv_head=1"),
        ({"mlp": "relu2"}, "mlp=relu2"),
        ({"qk_norm": True}, "qk_norm=true"),
        ({"tie_embeddings": False}, "tie_embeddings=false"),
        ({"logit_softcap": 15.0}, "logit_softcap=15.0"),
    ],
)
def test_a_backbone_that_is_not_gpt2_is_refused_by_name(tmp_path, switch, named):
    model = GPTModule(100, {**TINY_BACKBONE, **switch}, tokenizer=ByteTokenizer())
    with pytest.raises(HFCheckpointError, match=rf"not GPT-2-compatible: {named} .*format=safetensors"):
        export_hf(model, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variant", ["classifier", "llama_style_lm"])
def test_safetensors_export_loads_back_identically(tmp_path, variant):
    tokenizer = CharTokenizer()
    tokenizer.fit(TEXTS)
    if variant == "classifier":
        model = GPTClassifier(tokenizer.vocab_size, TINY_BACKBONE, ["austen", "bronte"], tokenizer=tokenizer)
    else:
        llama = {"pos_embedding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "bias": False, "n_kv_head": 1}
        model = GPTModule(tokenizer.vocab_size, {**TINY_BACKBONE, **llama}, tokenizer=tokenizer)
    export_safetensors(model.eval(), tmp_path / "out")
    loaded = load_safetensors(tmp_path / "out").eval()
    assert type(loaded) is type(model)
    assert loaded.tokenizer.to_json() == tokenizer.to_json()
    assert dict(loaded.hparams) == dict(model.hparams)
    ids = torch.tensor([tokenizer.encode(TEXTS[0])[:64]])
    torch.testing.assert_close(logits_of(loaded, ids), logits_of(model, ids), atol=0, rtol=0)
    if variant == "classifier":
        mask = torch.ones_like(ids, dtype=torch.bool)
        torch.testing.assert_close(loaded.classify(ids, mask), model.classify(ids, mask), atol=0, rtol=0)


# --- configs and recipes ------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(PRESET_PARAMETERS))
def test_gpt2_size_presets_compose_and_have_gpt2s_parameter_counts(tmp_path, preset):
    cfg = compose_config(f"paths.output_dir={tmp_path}", "model=gpt_classifier", f"model/backbone={preset}")
    config = GPTConfig(vocab_size=50257, **{**cfg.model.backbone, "pad_vocab_to_multiple": 1})
    assert (config.block_size, config.gelu_approximate) == (1024, "tanh")
    with torch.device("meta"):  # shapes only: no memory for gpt2-xl's weights
        backbone = GPT(config)
    assert backbone.num_parameters(exclude_positions=False) == PRESET_PARAMETERS[preset]


@pytest.fixture
def austen_sample(tmp_path) -> Path:
    """Six paragraphs of each novel, cut to 200 characters."""
    rows, seen = [], {}
    for line in AUSTEN.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if seen.get(row["label"], 0) < 6:
            seen[row["label"]] = seen.get(row["label"], 0) + 1
            rows.append(json.dumps({"text": row["text"][:200], "label": row["label"]}))
    path = tmp_path / "austen.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_gpt2_classify_needs_the_directory(compose_train):
    cfg = compose_train("experiment=gpt2_classify")
    with pytest.raises(MissingMandatoryValue, match=r"pretrained_hf"):
        train(cfg)


def test_fast_dev_run_of_gpt2_classify_from_a_local_gpt2(compose_train, austen_sample, hf_gpt2_vocab_dir):
    cfg = compose_train(
        "experiment=gpt2_classify", "debug=fdr", f"data.path={austen_sample}",
        f"model.pretrained_hf={hf_gpt2_vocab_dir}", "model.backbone.block_size=64", "data.batch_size=4",
        "callbacks.rich_progress_bar=null",
    )  # fmt: skip
    assert 0 <= train(cfg) <= 1  # optimized_metric: val/acc


def test_pretraining_continues_from_a_local_gpt2_with_the_configured_gpt2_files(
    compose_train, corpus, tmp_path
):
    """The directory has no vocabulary: tokenizer=gpt2 (data/gpt2) supplies it."""
    hf_dir = save_hf(random_hf_gpt2(vocab_size=50257), tmp_path / "weights_only")
    overrides = [o for o in TINY_OVERRIDES if not o.startswith("model.backbone")]
    cfg = compose_train(
        "debug=fdr", f"data.path={corpus}", "tokenizer=gpt2", f"+model.pretrained_hf={hf_dir}",
        "model.backbone.block_size=32", *overrides,
    )  # fmt: skip
    assert train(cfg) > 0  # val/loss


def test_a_directory_without_vocabulary_and_a_char_tokenizer_is_refused(compose_train, corpus, hf_dir):
    cfg = compose_train("debug=fdr", f"data.path={corpus}", f"+model.pretrained_hf={hf_dir}", *TINY_OVERRIDES)
    with pytest.raises(FileNotFoundError, match=r"no GPT-2 vocabulary .* pass tokenizer=gpt2"):
        train(cfg)
