"""gptlab: a Lightning + Hydra template for GPT models built from scratch."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from omegaconf import OmegaConf

from gptlab.run.dirs import run_directory, writable_log_dir

__version__ = "0.1.0"

# The checkout this package is installed from (editable install): configs/, data/ and logs/ live there.
PROJECT_ROOT = Path(os.environ.get("GPTLAB_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_DIR = PROJECT_ROOT / "configs"

OmegaConf.register_new_resolver("gptlab_root", lambda: str(PROJECT_ROOT), replace=True)
# cached: every reading in this process (Hydra's, Lightning's DDP launcher's) gets the same directory
OmegaConf.register_new_resolver("gptlab_run_dir", run_directory, replace=True, use_cache=True)
OmegaConf.register_new_resolver("gptlab_log_dir", writable_log_dir, replace=True)

# Known third-party noise, silenced where it comes from (tests/test_train.py checks a default run prints no
# warning): Lightning's own use of a torch API it deprecated, and its advertisement for a logging service.
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
)
warnings.filterwarnings(
    "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=DeprecationWarning
)
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not str(record.msg).startswith("💡 Tip: For seamless cloud logging")
)
