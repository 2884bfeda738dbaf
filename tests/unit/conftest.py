"""Fixtures of the unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio

KIRecorder = Callable[[type, str], list[bool]]


@pytest.fixture
def ki_protection(monkeypatch: pytest.MonkeyPatch) -> KIRecorder:
    """``ki_protection(cls, name)`` wraps method ``name`` of ``cls`` for the test; the list it
    returns gets, at each call, whether an interrupt would find the frame KI-protected."""

    def record(cls: type, name: str) -> list[bool]:
        seen: list[bool] = []
        method = getattr(cls, name)

        def recording(*args: Any, **kwargs: Any) -> Any:
            seen.append(trio.lowlevel.currently_ki_protected())
            return method(*args, **kwargs)

        monkeypatch.setattr(cls, name, recording)
        return seen

    return record
