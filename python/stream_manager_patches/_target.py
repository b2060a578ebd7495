"""Finding the stream manager's ``app`` module and describing it."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import List, Optional, Tuple

#: Where each generation of Roboflow Inference keeps the stream manager's ``app``
#: module, in the order we look for them. Inference >= 1.8 aliases the legacy path
#: to streamvision, so the first hit is right for every generation.
TARGET_MODULES: Tuple[str, ...] = (
    "inference.core.interfaces.stream_manager.manager_app.app",
    "streamvision.stream_manager.manager_app.app",
)


def find_target() -> ModuleType:
    """Import and return the installed stream manager ``app`` module.

    Raises ``ImportError`` listing every path tried and why each failed.
    """
    failures: List[str] = []
    for name in TARGET_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as error:
            failures.append(f"{name}: {type(error).__name__}: {error}")
    raise ImportError(
        "No Roboflow Inference stream manager found. Tried:\n  "
        + "\n  ".join(failures)
        + "\nInstall inference (e.g. `pip install 'inference-cpu[http]'`) or pass app=..."
    )


def package_version(distribution: str) -> Optional[str]:
    """Installed version of ``distribution``, or None."""
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
