"""mocomri: self-supervised MoCo pretraining for MRI.

The Python API (the command line calls the same functions)::

    mocomri.build_manifest, mocomri.write_manifest, mocomri.read_manifest   # data
    mocomri.load_config                                                     # the typed config
    mocomri.pretrain                                                        # MoCo pretraining
    mocomri.run_probe                                                       # probe against baselines
    mocomri.load_encoder                                                    # a run's encoder and its preprocessing
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Resolved on first use, so that `mocomri --help` and `import mocomri` stay fast (torch, MONAI and
# scikit-learn load only when one of these is asked for).
_API = {
    "build_manifest": "mocomri.data.manifest",
    "read_manifest": "mocomri.data.manifest",
    "write_manifest": "mocomri.data.manifest",
    "load_config": "mocomri.config",
    "pretrain": "mocomri.train.pretrain",
    "run_probe": "mocomri.eval",
    "load_encoder": "mocomri.api",
    "Encoder": "mocomri.api",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'mocomri' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name]), name)
