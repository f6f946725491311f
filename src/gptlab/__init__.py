"""gptlab: a Lightning + Hydra template for GPT models built from scratch."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

__version__ = "0.1.0"

# The checkout this package is installed from (editable install): configs/, data/ and logs/ live there.
PROJECT_ROOT = Path(os.environ.get("GPTLAB_ROOT", Path(__file__).resolve().parents[2]))
CONFIG_DIR = PROJECT_ROOT / "configs"

# The resolvers the configs use are registered by gptlab.run.resolvers (and by Hydra's plugin scan).

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
