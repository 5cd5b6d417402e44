"""vLLM version strings compared as numbers ("0.32.0" > "0.26.0" > "0.4.0.post1")."""

from __future__ import annotations

import re

from .layout import VLLM_VERSION

# The release rules and the planner assume when a caller names none (the one definition is layout.py).
DEFAULT_VLLM_VERSION = VLLM_VERSION


def version_tuple(version: str) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(version).split("+", 1)[0].split(".post")[0].split("rc")[0])
    return tuple(int(n) for n in nums[:3]) or (0,)


def in_range(version: str, since: str | None = None, until: str | None = None) -> bool:
    """since <= version < until (either bound may be None)."""
    v = version_tuple(version)
    if since and v < version_tuple(since):
        return False
    return not (until and v >= version_tuple(until))
