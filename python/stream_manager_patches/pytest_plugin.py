"""pytest plugin (registered through the ``pytest11`` entry point).

Fixtures:

* ``stream_manager_patches`` – the real stream manager ``app`` module, patched with the
  configuration from the environment for the duration of one test, then put back to the
  state it was in before the test.
* ``stream_manager_patcher`` – a function ``apply(app=None, *, only=None, config=None)``
  for tests that need their own selection or configuration; everything it applied is
  undone after the test.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Iterator

import pytest

from . import _patching


@pytest.fixture
def stream_manager_patcher() -> Iterator[Callable[..., ModuleType]]:
    previous = _patching._capture()

    def apply(app: Any = None, *, only: Any = None, config: Any = None) -> ModuleType:
        return _patching.apply_patches(app, only=only, config=config)

    try:
        yield apply
    finally:
        _patching._return_to(previous)


@pytest.fixture
def stream_manager_patches(
    stream_manager_patcher: Callable[..., ModuleType],
) -> ModuleType:
    return stream_manager_patcher()
