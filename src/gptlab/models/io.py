"""One way to rebuild a module from disk: the class registry and :func:`load_module`.

A checkpoint names the class that wrote it (:attr:`Checkpoint.class_name`); the registry maps that name
to the class, so nothing is guessed and no code from the checkpoint runs.
"""

from __future__ import annotations

import os

from gptlab.models.checkpoint import Checkpoint
from gptlab.models.classifier import GPTClassifier
from gptlab.models.module import GPTModule

MODULE_CLASSES: dict[str, type[GPTModule]] = {cls.__name__: cls for cls in (GPTModule, GPTClassifier)}


def module_class(name: str, where: str) -> type[GPTModule]:
    """The module class registered as ``name`` (``where`` names the file in the error)."""
    if name not in MODULE_CLASSES:
        raise ValueError(f"{where}: unknown model class {name!r}; known: {sorted(MODULE_CLASSES)}")
    return MODULE_CLASSES[name]


def load_module(
    path: str | os.PathLike, map_location: str = "cpu", expected: type[GPTModule] = GPTModule
) -> GPTModule:
    """Rebuild a model and its tokenizer from a checkpoint alone (loaded with ``weights_only=True``): a
    language model or a classifier, whichever was saved; refused unless it is an ``expected``."""
    checkpoint = Checkpoint.read(path, map_location)
    saved_cls = module_class(checkpoint.class_name, f"checkpoint '{path}'")
    if not issubclass(saved_cls, expected):
        raise ValueError(
            f"checkpoint '{path}' holds a {saved_cls.__name__}, not a {expected.__name__}; load it with "
            "load_module(path), or fine-tune from it with model.pretrained"
        )
    model = saved_cls(**checkpoint.hparams)
    model.load_state_dict(checkpoint.contents["state_dict"])
    model.on_load_checkpoint(checkpoint.contents)
    return model
