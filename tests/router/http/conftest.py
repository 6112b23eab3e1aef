from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.upstream import FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream("alpha").start()
    yield server
    server.stop()


@pytest.fixture
def second_upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream("beta").start()
    yield server
    server.stop()
