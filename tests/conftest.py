"""Shared fixtures. Conventions for tests:

- every kernel object a test makes lives in a namespace named ``np.<lab>.*`` where ``<lab>`` is a
  fresh ``t<hex>`` name, so ``netplane clean`` would also find it and tests never collide;
- fixtures remove what a test made even when the test fails;
- the root namespace must look the same after the suite as before it (``test_zz_root_untouched``).
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from netplane import names
from netplane.kernel import netns


def unique_lab(prefix: str = "t") -> str:
    return f"{prefix}{secrets.token_hex(3)}"


@pytest.fixture
def lab_name() -> str:
    return unique_lab()


@pytest.fixture
def make_netns(lab_name: str) -> Iterator:
    """make_netns(role) creates ``np.<lab>.<role>`` with lo up; all are removed afterwards."""
    made: list[str] = []

    def make(role: str) -> str:
        name = f"{names.lab_prefix(lab_name)}{role}"
        netns.create(name)
        made.append(name)
        return name

    yield make
    netns.kill_all_in(made)
    for name in made:
        netns.delete(name)
