"""The tasks gptlab knows, by the class name their checkpoints carry, and the one way to rebuild a module
from disk (:func:`load_module`).

A task is its module plus one :func:`register` call: the entry points ask the registry which data it reads,
whether it writes text and how it labels texts, and never test a module's class. Entries name their
classes and functions as ``"package.module:attribute"``, imported when first used, so that reading the
registry imports no task. A checkpoint names the class that wrote it (:attr:`Checkpoint.class_name`);
nothing is guessed, and no code from the checkpoint runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch

from gptlab.checkpoints import fit, formats
from gptlab.checkpoints.read import Checkpoint
from gptlab.tokenization import Tokenizer


@dataclass(frozen=True)
class Task:
    """One task: ``module`` trains it (a :class:`~gptlab.tasks.base.GPTTask`), ``datamodule`` is the data
    it reads (``data_hint`` says which data configs make one), ``predictor`` labels texts for
    gptlab-predict (``predictor(model, texts, cfg) -> (columns, rows)``, None: the task labels nothing)
    and ``generates`` says whether gptlab-generate samples text from it."""

    name: str
    module: str
    datamodule: str
    data_hint: str
    predictor: str | None = None
    generates: bool = False

    @property
    def class_name(self) -> str:
        return self.module.rpartition(":")[2]

    def module_class(self) -> type:
        return _attribute(self.module)

    def datamodule_class(self) -> type:
        return _attribute(self.datamodule)

    def predict_function(self) -> Callable[..., tuple[list[str], list[list[Any]]]] | None:
        return None if self.predictor is None else _attribute(self.predictor)


def _attribute(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` under its module's class name (registering the same entry again changes nothing)."""
    known = TASKS.get(task.class_name)
    if known is not None and known != task:
        raise ValueError(f"a task class named {task.class_name!r} is registered already: {known}")
    TASKS[task.class_name] = task
    return task


register(
    Task(
        name="language model",
        module="gptlab.tasks.lm:GPTModule",
        datamodule="gptlab.data.datamodules:PretrainDataModule",
        data_hint="a corpus (data=shakespeare, or data=corpus data.path=<file>)",
        generates=True,
    )
)
register(
    Task(
        name="text classifier",
        module="gptlab.tasks.classification:GPTClassifier",
        datamodule="gptlab.data.classification:ClassificationDataModule",
        data_hint="labelled rows (data=austen data.path=<file>)",
        predictor="gptlab.tasks.classify:predict_labels",
    )
)


ENTRY_POINT_GROUP = "gptlab.tasks"


def load_installed_tasks() -> None:
    """Import the modules that installed packages name under the ``gptlab.tasks`` entry-point group
    (each calls :func:`register`), so that a command line knows their tasks without importing them."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        entry.load()


def task_of(class_name: str, where: str) -> Task:
    """The task registered as ``class_name`` (``where`` names the file in the error)."""
    if class_name not in TASKS:
        load_installed_tasks()
    if class_name not in TASKS:
        raise ValueError(
            f"{where}: unknown model class {class_name!r}; known: {sorted(TASKS)}. A task of your own is "
            f"known once the module that registers it is imported: name it in your package's "
            f"[project.entry-points.\"{ENTRY_POINT_GROUP}\"] table"
        )
    return TASKS[class_name]


def task_for_module(model: Any) -> Task:
    """The task of a module built from a config or a checkpoint."""
    return task_of(type(model).__name__, f"model {type(model).__name__}")


def load_module(path: str | os.PathLike, map_location: str = "cpu", expected: type | None = None) -> Any:
    """Rebuild a model and its tokenizer from a checkpoint alone (loaded with ``weights_only=True``),
    whichever task wrote it; refused unless it is an ``expected``, when one is named."""
    checkpoint = Checkpoint.read(path, map_location)
    module_class = task_of(checkpoint.class_name, f"checkpoint '{path}'").module_class()
    if expected is not None and not issubclass(module_class, expected):
        raise ValueError(
            f"checkpoint '{path}' holds a {module_class.__name__}, not a {expected.__name__}; load it with "
            "load_module(path), or fine-tune from it with model.pretrained"
        )
    model = module_class(**checkpoint.hparams)
    try:
        fit.check_fits(checkpoint, model, fix="pass a checkpoint written by gptlab-train, whole")
    except fit.CheckpointMismatch as err:
        raise fit.CheckpointMismatch(f"checkpoint '{path}': {err}") from None
    model.load_state_dict(checkpoint.contents["state_dict"])
    model.on_load_checkpoint(checkpoint.contents)
    return model


def load_safetensors(directory: str | os.PathLike) -> Any:
    """The module :func:`gptlab.checkpoints.formats.export_safetensors` wrote to ``directory``, on the CPU
    (tokenizer attached when one was saved)."""
    directory = Path(directory).expanduser()
    config_file = directory / formats.MODEL_CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(
            f"'{directory}' has no {formats.MODEL_CONFIG_FILE}; pass a directory written by "
            "gptlab-export format=safetensors"
        )
    saved = json.loads(config_file.read_text(encoding="utf-8"))
    model = task_of(saved["class"], str(config_file)).module_class()(**saved["hyper_parameters"])
    safetensors.torch.load_model(model, str(directory / formats.WEIGHTS_FILE), strict=True)
    tokenizer_file = directory / formats.TOKENIZER_FILE
    if tokenizer_file.is_file():
        model.tokenizer = Tokenizer.from_json(tokenizer_file.read_text(encoding="utf-8"))
    return model
