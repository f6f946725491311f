"""A gptlab checkpoint read from disk once: its contents, the module class that wrote it, its tokenizer.

Every task writes its class name under ``CLASS_KEY`` (see ``GPTTask.on_save_checkpoint``);
:mod:`gptlab.tasks.registry` turns the name back into the task.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gptlab.tokenization import Tokenizer, checkpoint_tokenizer

CLASS_KEY = "gptlab_class"


def read_checkpoint(path: str | os.PathLike, map_location: str = "cpu", mmap: bool = False) -> dict[str, Any]:
    """A gptlab checkpoint's contents, loaded with ``weights_only=True`` (no code runs); ``mmap`` maps the
    tensors instead of reading them (for a look at their shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint '{path}' does not exist; pass the path of a .ckpt file "
            "(runs keep them in logs/train/runs/<time>/checkpoints/)"
        )
    not_torch = ValueError(
        f"'{path}' is not a checkpoint torch can read; pass a .ckpt file written by gptlab-train"
    )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive (a text file, a truncated copy...)
        raise not_torch
    try:
        contents = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise  # torch's message says what it refused to run (nothing was run)
    except (RuntimeError, KeyError, EOFError) as err:  # a zip archive of something else
        raise not_torch from err
    if not isinstance(contents, dict) or not {"state_dict", "hyper_parameters"} <= contents.keys():
        found = sorted(map(str, contents))[:8] if isinstance(contents, dict) else type(contents).__name__
        raise ValueError(
            f"'{path}' is a torch file but not a gptlab checkpoint (it holds {found}, not a state_dict "
            "with hyper_parameters); pass a .ckpt file written by gptlab-train (a Hugging Face GPT-2 "
            "directory goes to model.pretrained_hf)"
        )
    return contents


class Checkpoint:
    """The contents of the checkpoint at ``path``, read once and shared by everything that needs them
    (a fine-tune's tokenizer and its backbone weights, say)."""

    def __init__(self, path: str | os.PathLike, contents: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.contents = contents

    @classmethod
    def read(cls, path: str | os.PathLike, map_location: str = "cpu", mmap: bool = False) -> Checkpoint:
        return cls(path, read_checkpoint(path, map_location, mmap))

    def __repr__(self) -> str:
        return f"Checkpoint('{self.path}')"

    @property
    def hparams(self) -> dict[str, Any]:
        return self.contents["hyper_parameters"]

    @property
    def class_name(self) -> str:
        """The module class that wrote the checkpoint. Checkpoints from before ``CLASS_KEY`` existed
        are classifiers exactly when their hyperparameters name labels."""
        if CLASS_KEY in self.contents:
            return self.contents[CLASS_KEY]
        return "GPTClassifier" if "label_names" in self.hparams else "GPTModule"

    def tokenizer(self, where: str | None = None) -> Tokenizer:
        return checkpoint_tokenizer(self.contents, where or f"checkpoint '{self.path}'")

    def submodule_state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The saved weights of the submodule ``prefix`` (``backbone``, ``head``), under its own names."""
        state = self.contents["state_dict"]
        return {k.removeprefix(f"{prefix}."): v for k, v in state.items() if k.startswith(f"{prefix}.")}
