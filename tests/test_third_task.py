"""A task gptlab does not ship (tests/tasks/regression.py: a number read from a text) goes through train,
eval, predict and export with no edit to any of them: the registry entry is all they learn of it."""

from __future__ import annotations

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from gptlab.eval import evaluate
from gptlab.export import export
from gptlab.predict import predict
from gptlab.run.hydra import compose_config as compose
from gptlab.tasks.registry import load_module, load_safetensors
from gptlab.train import train
from tests.conftest import compose_config
from tests.tasks.regression import Regressor

TINY = [
    "model.backbone.n_layer=1", "model.backbone.n_head=2", "model.backbone.n_embd=16",
    "model.backbone.block_size=16", "model.compile=false", "trainer.precision=32-true",
]  # fmt: skip


def number_rows(path: Path, count: int = 48) -> Path:
    """Texts of a's and b's whose value is the share of a's."""
    generator = random.Random(0)
    with path.open("w", encoding="utf-8") as file:
        for _ in range(count):
            text = "".join(generator.choice("ab") for _ in range(generator.randint(4, 12)))
            file.write(json.dumps({"text": text, "value": text.count("a") / len(text)}) + "\n")
    return path


def with_number_data(cfg, rows: Path):
    """The run's config with its data node replaced by the task's own datamodule (as a user's
    configs/data/numbers.yaml would be)."""
    with open_dict(cfg):
        cfg.data = OmegaConf.create(
            {"_target_": "tests.tasks.regression.NumberData", "path": str(rows), "batch_size": 4}
        )
    return cfg


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("regression")
    rows = number_rows(out / "numbers.jsonl")
    cfg = compose_config(
        out, "model._target_=tests.tasks.regression.Regressor", *TINY, "callbacks.text_sampler=null",
        "callbacks.choice_eval=null", "trainer.max_steps=8", "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=2",
    )  # fmt: skip
    train(with_number_data(cfg, rows))
    return rows, Path(cfg.paths.output_dir)


def checkpoint_values(ckpt: Path, texts: list[str]) -> list[float]:
    model = load_module(ckpt)
    model.eval()
    with torch.inference_mode():
        return [
            float(model.predict_values(ids, torch.ones_like(ids, dtype=torch.bool)))
            for ids in (torch.tensor([model.tokenizer.encode(text)]) for text in texts)
        ]


def test_a_third_task_trains_and_its_checkpoint_names_it(regression_run):
    _, run_dir = regression_run
    model = load_module(run_dir / "checkpoints" / "last.ckpt")
    assert type(model) is Regressor
    assert model.head.out_features == 1
    assert model.tokenizer.chars == ["a", "b"]


def test_gptlab_eval_tests_the_third_task_on_its_data(regression_run, tmp_path):
    rows, run_dir = regression_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose(
        f"ckpt_path={ckpt}", f"paths.output_dir={tmp_path / 'eval'}", f"paths.log_dir={tmp_path}",
        "callbacks=none", "trainer.precision=32-true", config_name="eval",
    )  # fmt: skip
    metrics = evaluate(with_number_data(cfg, rows))
    records = [json.loads(line) for line in rows.read_text(encoding="utf-8").splitlines()]
    held_out = records[7 * len(records) // 8 :]
    predicted = checkpoint_values(ckpt, [r["text"] for r in held_out])
    mae = sum(abs(p - r["value"]) for p, r in zip(predicted, held_out, strict=True)) / len(held_out)
    assert metrics["test/mae"] == pytest.approx(mae, rel=1e-4)


def test_gptlab_predict_writes_the_third_tasks_numbers(regression_run, tmp_path):
    _, run_dir = regression_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    texts = ["aaaa", "abab", "bbbbbb"]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    cfg = compose(
        f"ckpt_path={ckpt}", f"input={tmp_path / 'in.txt'}", f"output={tmp_path / 'out.csv'}",
        config_name="predict",
    )  # fmt: skip
    predict(cfg)
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as file:
        written = list(csv.reader(file))
    assert written[0] == ["line", "value"]
    assert [row[0] for row in written[1:]] == ["1", "2", "3"]
    expected = checkpoint_values(ckpt, texts)
    assert [float(row[1]) for row in written[1:]] == pytest.approx(expected, abs=1e-6)


def test_gptlab_export_writes_the_third_task_and_it_loads_back(regression_run, tmp_path):
    _, run_dir = regression_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    cfg = compose(
        f"ckpt_path={ckpt}", "format=safetensors", f"out={tmp_path / 'export'}", config_name="export"
    )
    export(cfg)
    exported = load_safetensors(tmp_path / "export")
    assert type(exported) is Regressor
    original = load_module(ckpt)
    for name, tensor in original.state_dict().items():
        torch.testing.assert_close(exported.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    assert exported.tokenizer.chars == original.tokenizer.chars


def test_the_command_line_knows_a_task_that_an_installed_package_names(regression_run, tmp_path):
    """gptlab-predict in a fresh process imports nothing of tests/: the task is found through the
    ``gptlab.tasks`` entry point of a package installed on its path."""
    _, run_dir = regression_run
    site = tmp_path / "site"
    dist = site / "numbers_task-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: numbers-task\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gptlab.tasks]\nregression = tests.tasks.regression\n")
    (tmp_path / "in.txt").write_text("aab\n", encoding="utf-8")
    command = [
        sys.executable, "-c", "from gptlab.predict import main; main()",
        f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "input=in.txt", "output=out.csv",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(Path(__file__).parents[1])])}
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = (tmp_path / "out.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "line,value" and rows[1].startswith("1,")

    (dist / "entry_points.txt").write_text("[gptlab.tasks]\n")
    done = subprocess.run([*command[:-1], "output=again.csv"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert "unknown model class 'Regressor'" in done.stderr
    assert '[project.entry-points."gptlab.tasks"]' in done.stderr
    assert not (tmp_path / "again.csv").exists()
