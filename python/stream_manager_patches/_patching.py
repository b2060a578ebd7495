"""Installing and restoring the patches.

Modelled on pytest's ``MonkeyPatch``: every attribute we set has an undo record, and
``restore_patches()`` puts back the exact objects that were there (``is``-identical).
Installing is all or nothing: every replacement is built and every target attribute
checked before the first ``setattr``, and a failure part-way rolls back what was set.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Dict, Iterable, Iterator, Mapping, Optional, Tuple, Union

from . import _compat, _native
from ._native import Config
from ._server import build_manager_handler, build_pooled_server
from ._target import find_target

PATCH_NAMES: Tuple[str, ...] = tuple(_native.PATCH_NAMES)
#: What ``all`` and the default mean: every patch but the opt-in ``server``.
DEFAULT_PATCH_NAMES: Tuple[str, ...] = tuple(_native.DEFAULT_PATCH_NAMES)
#: The module attribute each patch replaces.
PATCH_ATTRIBUTES: Dict[str, str] = {
    **{name: name for name in PATCH_NAMES},
    "manager_handler": "InferencePipelinesManagerHandler",
    "server": "RoboflowTCPServer",
}

ConfigLike = Union[Config, Mapping[str, Any], None]


@dataclass
class _Installation:
    target: ModuleType
    config: Config
    #: patch name -> the object that was on the target before we touched it
    originals: Dict[str, Any] = field(default_factory=dict)
    #: patch name -> the replacement we installed
    installed: Dict[str, Any] = field(default_factory=dict)


_LOCK = threading.RLock()
_ACTIVE: Optional[_Installation] = None


def _resolve_config(config: ConfigLike) -> Config:
    if config is None:
        # Read the environment on every call: tests and operators change it at run time.
        return Config.from_env()
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return Config(**dict(config))
    raise TypeError(
        f"config must be a stream_manager_patches.Config, a mapping or None, not {type(config).__name__}"
    )


def _resolve_names(only: Optional[Iterable[str]]) -> Tuple[str, ...]:
    if only is None:
        return DEFAULT_PATCH_NAMES
    if isinstance(only, str):
        only = [part for part in only.split(",") if part.strip()]
    requested = []
    for name in (str(n).strip() for n in only):
        requested.extend(DEFAULT_PATCH_NAMES if name.lower() == "all" else [name])
    unknown = [name for name in requested if name not in PATCH_NAMES]
    if unknown:
        raise ValueError(
            f"unknown patch name(s) {unknown}; valid names: {', '.join(PATCH_NAMES)}"
        )
    return tuple(name for name in PATCH_NAMES if name in requested)


def _build_replacements(
    target: ModuleType, names: Tuple[str, ...], config: Config, originals: Mapping[str, Any]
) -> Dict[str, Any]:
    missing = [PATCH_ATTRIBUTES[name] for name in names if not hasattr(target, PATCH_ATTRIBUTES[name])]
    if missing:
        raise TypeError(
            f"{getattr(target, '__name__', target)!r} has no attribute(s) {missing}; "
            "is it the stream manager's app module?"
        )
    native = _native.bind_patches(target, config)
    replacements: Dict[str, Any] = {}
    for name in names:
        if name == "manager_handler":
            replacements[name] = build_manager_handler(
                target,
                originals[name],
                originals.get("get_response_ignoring_thrash", target.get_response_ignoring_thrash),
            )
        elif name == "server":
            replacements[name] = build_pooled_server(originals[name], config)
        else:
            replacements[name] = native[name]
    return replacements


def apply_patches(
    app: Optional[ModuleType] = None,
    *,
    only: Optional[Iterable[str]] = None,
    config: ConfigLike = None,
) -> ModuleType:
    """Install the patches on ``app`` (found automatically when None) and return it.

    ``only`` limits the set (default: every patch but the opt-in ``server``; names may
    include ``all``). ``config`` is a :class:`Config`, a
    mapping of its fields, or None to read ``STREAM_MANAGER_*`` from the environment now.
    Calling it again on the same module re-installs with the new selection and config;
    the recorded originals are kept. Patching a second module while one is patched is an
    error: restore first.
    """
    global _ACTIVE
    resolved = _resolve_config(config)
    names = _resolve_names(only)
    with _LOCK:
        target = app if app is not None else find_target()
        if _ACTIVE is not None and _ACTIVE.target is not target:
            raise RuntimeError(
                f"patches are already applied to {_ACTIVE.target.__name__}; "
                "call restore_patches() before patching another module"
            )
        _, unverified = _compat.check(target, names)
        if unverified:
            if _compat.strict_mode():
                raise RuntimeError(f"{unverified}; refusing because {_compat.ENV_STRICT}=1")
            warnings.warn(unverified, RuntimeWarning, stacklevel=2)
        known_originals = dict(_ACTIVE.originals) if _ACTIVE is not None else {}
        for name in PATCH_NAMES:
            if name in names or name == "get_response_ignoring_thrash":
                known_originals.setdefault(name, getattr(target, PATCH_ATTRIBUTES[name], None))
        replacements = _build_replacements(target, names, resolved, known_originals)

        installation = _Installation(target=target, config=resolved)
        installation.originals = {
            name: known_originals[name]
            for name in set(names) | set(_ACTIVE.originals if _ACTIVE else {})
        }
        previous_values: Dict[str, Any] = {}
        try:
            for name in PATCH_NAMES:
                attribute = PATCH_ATTRIBUTES[name]
                if name in replacements:
                    previous_values[name] = getattr(target, attribute)
                    setattr(target, attribute, replacements[name])
                    installation.installed[name] = replacements[name]
                elif name in installation.originals:
                    # Was patched before, not selected now: put the original back.
                    previous_values[name] = getattr(target, attribute)
                    setattr(target, attribute, installation.originals.pop(name))
        except BaseException:
            for name, value in previous_values.items():
                setattr(target, PATCH_ATTRIBUTES[name], value)
            raise
        _ACTIVE = installation if installation.installed else None
        return target


def restore_patches() -> None:
    """Put back every original attribute (``is``-identical). Safe to call when nothing is patched."""
    global _ACTIVE
    with _LOCK:
        if _ACTIVE is None:
            return
        for name, original in _ACTIVE.originals.items():
            setattr(_ACTIVE.target, PATCH_ATTRIBUTES[name], original)
        _ACTIVE = None


def is_patched(name: Optional[str] = None) -> bool:
    """Whether any patch (or the patch ``name``) is currently installed."""
    with _LOCK:
        if _ACTIVE is None:
            return False
        if name is None:
            return True
        return name in _ACTIVE.installed


def active_patches() -> Tuple[str, ...]:
    """Names of the installed patches, in install order."""
    with _LOCK:
        return tuple(_ACTIVE.installed) if _ACTIVE is not None else ()


def patched_target() -> Optional[ModuleType]:
    """The module currently patched, if any."""
    with _LOCK:
        return _ACTIVE.target if _ACTIVE is not None else None


def active_config() -> Optional[Config]:
    """The configuration the installed patches were built with, if any."""
    with _LOCK:
        return _ACTIVE.config if _ACTIVE is not None else None


def originals() -> Dict[str, Any]:
    """A copy of the recorded originals (name -> object)."""
    with _LOCK:
        return dict(_ACTIVE.originals) if _ACTIVE is not None else {}


def install_from_env(app: Optional[ModuleType] = None) -> Tuple[str, ...]:
    """Apply what ``STREAM_MANAGER_PATCHES`` selects (default: all), with the
    configuration from the environment. ``none``/``0``/``off`` restores the originals.
    Returns the installed patch names. Invalid variables raise ``ValueError`` and leave
    the current state untouched."""
    config = Config.from_env()
    names = tuple(config.patches)
    with _LOCK:
        if not names:
            restore_patches()
            return ()
        apply_patches(app, only=names, config=config)
        return active_patches()


def _capture() -> Optional[Tuple[ModuleType, Tuple[str, ...], Config]]:
    with _LOCK:
        if _ACTIVE is None:
            return None
        return (_ACTIVE.target, tuple(_ACTIVE.installed), _ACTIVE.config)


def _return_to(previous: Optional[Tuple[ModuleType, Tuple[str, ...], Config]]) -> None:
    with _LOCK:
        if previous is None:
            restore_patches()
        else:
            target, names, config = previous
            if _ACTIVE is not None and _ACTIVE.target is not target:
                restore_patches()
            apply_patches(target, only=names, config=config)


@contextmanager
def patched(
    app: Optional[ModuleType] = None,
    *,
    only: Optional[Iterable[str]] = None,
    config: ConfigLike = None,
) -> Iterator[ModuleType]:
    """Context manager: patches inside the block, the previous state after it."""
    with _LOCK:
        previous = _capture()
        target = apply_patches(app, only=only, config=config)
    try:
        yield target
    finally:
        _return_to(previous)
