"""Which upstream generation is patched, its version, and the versions each patch was
verified on.

``apply_patches`` warns when the installed version is outside a patch's verified range,
and refuses (``RuntimeError``, nothing installed) under ``STREAM_MANAGER_PATCHES_STRICT=1``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from types import ModuleType
from typing import Dict, List, Optional, Sequence, Tuple

from ._target import package_version

ENV_STRICT = "STREAM_MANAGER_PATCHES_STRICT"


@dataclass(frozen=True)
class Generation:
    name: str
    module: str
    distributions: Tuple[str, ...]
    #: [low, high) range every patch was verified on for this generation
    verified: Tuple[str, str]
    #: exact releases the suites ran against (README compatibility table)
    verified_on: Tuple[str, ...]


GENERATIONS: Tuple[Generation, ...] = (
    Generation(
        name="inference",
        module="inference.core.interfaces.stream_manager.manager_app.app",
        distributions=("inference", "inference-cpu", "inference-gpu", "inference-core"),
        verified=("0.54.0", "1.8.0"),
        verified_on=("0.54.1",),
    ),
    Generation(
        name="streamvision",
        module="streamvision.stream_manager.manager_app.app",
        distributions=("streamvision",),
        verified=("0.1.1", "0.2.0"),
        # 0.1.1 is what inference-cpu 1.7.4 installs (its legacy path aliases to it)
        verified_on=("0.1.1", "0.1.4"),
    ),
)


def parse_version(text: Optional[str]) -> Optional[Tuple[int, ...]]:
    """Leading numeric release components (``1.7.4rc1`` -> ``(1, 7, 4)``)."""
    if not text:
        return None
    parts = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if not match:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts) or None


def in_range(version: str, low: str, high: str) -> bool:
    parsed, lo, hi = parse_version(version), parse_version(low), parse_version(high)
    if parsed is None or lo is None or hi is None:
        return False
    return lo <= parsed < hi


@dataclass(frozen=True)
class TargetInfo:
    generation: Optional[Generation]
    version: Optional[str]
    module: str

    @property
    def verified(self) -> bool:
        if self.generation is None:
            return True  # not an upstream module (a test double): nothing to check
        return self.version is not None and in_range(self.version, *self.generation.verified)

    def describe_range(self) -> str:
        if self.generation is None:
            return "n/a"
        low, high = self.generation.verified
        return f"{self.generation.name} >={low},<{high} (verified on {', '.join(self.generation.verified_on)})"


def detect(target: ModuleType) -> TargetInfo:
    name = getattr(target, "__name__", "")
    generation = next((g for g in GENERATIONS if name == g.module), None)
    version: Optional[str] = None
    if generation is not None:
        version = getattr(target, "__version__", None)
        for distribution in generation.distributions:
            version = version or package_version(distribution)
    return TargetInfo(generation=generation, version=version, module=name)


def strict_mode() -> bool:
    return os.environ.get(ENV_STRICT, "").strip().lower() in ("1", "true", "on", "yes")


def unverified_message(info: TargetInfo, patches: Sequence[str]) -> str:
    return (
        f"stream-manager-patches: {info.generation.name if info.generation else info.module} "
        f"version {info.version or 'unknown'} is outside the range the patches "
        f"{', '.join(patches)} were verified on: {info.describe_range()}"
    )


def check(target: ModuleType, patches: Sequence[str]) -> Tuple[TargetInfo, Optional[str]]:
    """Returns the detected target and, if unverified, the message to warn or raise with."""
    info = detect(target)
    if info.verified or not patches:
        return info, None
    return info, unverified_message(info, patches)


def report(target: ModuleType, patches: Sequence[str]) -> Dict[str, object]:
    info = detect(target)
    return {
        "generation": info.generation.name if info.generation else None,
        "version": info.version,
        "verified_range": info.describe_range(),
        "strict": strict_mode(),
        "patches": {name: ("verified" if info.verified else "unverified version") for name in patches},
    }


def all_verified_on() -> List[str]:
    return [f"{g.name} {v}" for g in GENERATIONS for v in g.verified_on]
