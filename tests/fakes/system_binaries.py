"""System programs some tests run (Debian's redis-server, chromium), which `.ci/run` installs.

On a developer's machine without one, its tests skip and say how to install it. Under `.ci/run`
(which exports TRIAGE_CI=1 after installing them) a missing one fails instead: CI must never
pass by skipping what it was meant to run.
"""

from __future__ import annotations

import os
import shutil

import pytest


def require(program: str, install: str) -> str:
    """The path of `program` (a name on PATH or an absolute path), else skip, or fail under CI."""
    path = shutil.which(program)
    if path is None:
        message = f"{program} is not installed ({install}; .ci/run installs it)"
        if os.environ.get("TRIAGE_CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
