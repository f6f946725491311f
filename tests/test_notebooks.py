"""Execute the notebooks in notebooks/ in a real Jupyter kernel and check what their cells show.

Each notebook writes only under $GPTLAB_NOTEBOOK_DIR (a temporary directory here) and downloads nothing.
Cells are found by their tag (cell metadata "tags"), so editing the prose around them is safe.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from gptlab import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
CJK = re.compile(r"[\u4e00-\u9fff]")
AUSTEN_NOVELS = {
    "Emma",
    "Mansfield Park",
    "Northanger Abbey",
    "Persuasion",
    "Pride & Prejudice",
    "Sense & Sensibility",
}


def execute(name: str, out_dir: Path) -> nbformat.NotebookNode:
    """Run every cell of notebooks/<name> in a python3 kernel (the venv's ipykernel), writing in out_dir."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    with pytest.MonkeyPatch.context() as env:  # the kernel inherits this process's environment
        env.setenv("GPTLAB_NOTEBOOK_DIR", str(out_dir))
        env.setenv("OMP_NUM_THREADS", "1")
        env.delenv("GPTLAB_CHECKPOINT", raising=False)  # attention_maps.ipynb trains its own model
        env.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend must draw the figures
        client = NotebookClient(
            notebook,
            kernel_name="python3",
            timeout=600,
            # the kernel's working directory: a stray relative path would land here, not in the checkout
            resources={"metadata": {"path": str(out_dir)}},
        )
        start = time.perf_counter()
        client.execute()
    print(f"{name} executed in {time.perf_counter() - start:.1f} s")
    return notebook


def tagged(notebook: nbformat.NotebookNode, tag: str) -> list:
    """The outputs of the one code cell tagged ``tag``."""
    cells = [cell for cell in notebook.cells if tag in cell.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    return cells[0].outputs


def stdout(outputs: list) -> str:
    return "".join(out.text for out in outputs if out.output_type == "stream" and out.name == "stdout")


def images(outputs: list) -> list:
    return [out for out in outputs if out.output_type == "display_data" and "image/png" in out.data]


def test_notebooks_are_stored_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: strip the outputs"


@pytest.mark.slow
def test_quickstart(tmp_path):
    notebook = execute("quickstart.ipynb", tmp_path)

    # every run, checkpoint and token cache went under the directory the notebook was given
    for run in ("shakespeare", "austen", "chinese"):
        assert (tmp_path / run / "checkpoints" / "last.ckpt").is_file()
        assert (tmp_path / run / "config_resolved.yaml").is_file()
    assert any((tmp_path / "cache").iterdir())

    assert len(images(tagged(notebook, "loss-plot"))) == 1

    sample = stdout(tagged(notebook, "lm-sample"))
    assert sample.startswith("ROMEO:") and len(sample.strip()) > 150

    assert len(images(tagged(notebook, "confusion-matrix"))) == 1

    predictions = stdout(tagged(notebook, "predictions")).strip().splitlines()
    assert len(predictions) == 6
    for line in predictions:
        label, probability = re.match(r"(.+?)\s+(\d\.\d\d)  ", line).groups()
        assert label in AUSTEN_NOVELS and 0 < float(probability) <= 1

    chinese = stdout(tagged(notebook, "chinese-sample"))
    assert chinese.startswith("春天") and "\n冬天" in chinese  # one sample per prompt
    generated = chinese.replace("春天", "", 1).replace("冬天", "", 1)
    assert len(CJK.findall(generated)) >= 20  # the model writes Chinese characters, not just the prompts


@pytest.mark.slow
def test_attention_maps(tmp_path):
    notebook = execute("attention_maps.ipynb", tmp_path)

    assert (tmp_path / "shakespeare" / "checkpoints" / "last.ckpt").is_file()

    # the recomputed probabilities reproduce the module's SDPA output in every layer (the cell asserts it)
    check = stdout(tagged(notebook, "check")).strip().splitlines()
    layers = len(check)
    assert layers == 4 and all("max |difference|" in line for line in check)

    # one heads x positions figure per layer
    assert len(images(tagged(notebook, "heatmaps"))) == layers

    summary = stdout(tagged(notebook, "summary")).strip().splitlines()
    assert len(summary) == 1 + layers * 4  # a header, then one row per (layer, head)
    for row in summary[1:]:
        same, previous, first = (float(value) for value in row.split()[2:])
        assert 0 <= same <= 1 and 0 <= previous <= 1 and 0 <= first <= 1
