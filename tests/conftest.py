"""Shared pytest configuration: the `--rewrite` option and `async def` tests.

- `pytest --rewrite` regenerates golden datadriven files (etcd's `-rewrite`);
  tests read it through the `rewrite` fixture.
- `async def` tests run without a plugin: each runs in a fresh event loop
  under `asyncio.run`, bounded by 60 s or `@pytest.mark.timeout_s(N)`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable

import pytest

DEFAULT_ASYNC_TIMEOUT_S = 60.0


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite golden datadriven files with the actual output",
    )


@pytest.fixture
def rewrite(request: pytest.FixtureRequest) -> bool:
    """True when pytest runs with --rewrite."""
    return bool(request.config.getoption("--rewrite"))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func):
        return None  # sync tests: pytest's own implementation runs them
    marker = pyfuncitem.get_closest_marker("timeout_s")
    timeout_s = float(marker.args[0]) if marker is not None else DEFAULT_ASYNC_TIMEOUT_S
    kwargs = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    asyncio.run(_bounded(func(**kwargs), timeout_s))
    return True


async def _bounded(test: Awaitable[object], timeout_s: float) -> None:
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            await test
    except TimeoutError:
        if deadline.expired():  # ours, not a TimeoutError raised by the test itself
            pytest.fail(f"async test did not finish within {timeout_s:g} s (see @pytest.mark.timeout_s)")
        raise
