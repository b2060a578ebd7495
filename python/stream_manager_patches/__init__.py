"""Native, bounded, observable replacements for the Roboflow Inference stream manager.

Quick start::

    import stream_manager_patches as smp
    smp.apply_patches()        # finds the installed stream manager app module
    ...
    smp.restore_patches()      # originals back, ``is``-identical

or, honouring ``STREAM_MANAGER_PATCHES``::

    smp.install_from_env()
"""

from __future__ import annotations

from . import _native
from ._native import Config, request_shutdown, is_shutdown_requested, reset_shutdown
from ._metrics import (
    StreamManagerCollector,
    performance_summary,
    register_prometheus,
    render_prometheus,
    reset_metrics,
)
from ._patching import (
    DEFAULT_PATCH_NAMES,
    PATCH_ATTRIBUTES,
    PATCH_NAMES,
    active_config,
    active_patches,
    apply_patches,
    install_from_env,
    is_patched,
    originals,
    patched,
    patched_target,
    restore_patches,
)
from ._target import TARGET_MODULES, find_target

__version__: str = _native.__version__

#: Thread-safe per-pipeline records kept by the native layer.
pipeline_states = _native.pipeline_states

__all__ = [
    "Config",
    "DEFAULT_PATCH_NAMES",
    "PATCH_ATTRIBUTES",
    "PATCH_NAMES",
    "TARGET_MODULES",
    "active_config",
    "active_patches",
    "apply_patches",
    "find_target",
    "install_from_env",
    "is_patched",
    "is_shutdown_requested",
    "originals",
    "performance_summary",
    "register_prometheus",
    "render_prometheus",
    "reset_metrics",
    "StreamManagerCollector",
    "patched",
    "patched_target",
    "pipeline_states",
    "request_shutdown",
    "reset_shutdown",
    "restore_patches",
]
