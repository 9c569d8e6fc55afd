"""Headless Chromium for tests that look at a page as a person would
(Debian's `chromium`, installed by scripts/test.sh).

Two ways:

- `dump_dom(url)`: `chromium --headless --dump-dom` after the page ran for
  a virtual-time budget: the DOM as the page's script left it;
- `Browser` + `Page`: a browser kept open on a page (module-scoped), driven
  over the DevTools protocol (CDP) through its websocket with aiohttp's
  client: `Runtime.evaluate` reads what the page shows while it refreshes
  itself, `Page.captureScreenshot` keeps a picture of it.

Nothing here reaches beyond 127.0.0.1: background networking, component
updates and sync are off, the profile is a fresh temporary directory.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MISSING = "chromium is not installed (Debian: apt-get install chromium; scripts/test.sh installs it as root)"

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--window-size=1300,1900",
]


def dump_dom(url: str, profile: Path, *, budget_ms: int = 5000, timeout_s: float = 60) -> str:
    """The page's DOM once its script ran for budget_ms of virtual time."""
    assert CHROMIUM is not None, MISSING
    out = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert out.returncode == 0 and out.stdout, f"chromium --dump-dom {url} failed ({out.returncode}): {out.stderr[-2000:]}"
    return out.stdout


class Browser:
    """A headless Chromium with its DevTools port open, showing `url`."""

    def __init__(self, url: str, tmp: Path, *, timeout_s: float = 30) -> None:
        assert CHROMIUM is not None, MISSING
        tmp.mkdir(parents=True, exist_ok=True)
        self.profile = tmp / "profile"
        self.log_path = tmp / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", url],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its helper processes share its process group: stop() ends them with it
        )
        deadline = time.monotonic() + timeout_s
        port_file = self.profile / "DevToolsActivePort"
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"chromium exited with {self.proc.returncode}: {self.log_tail()}")
            text = port_file.read_text() if port_file.exists() else ""
            if text.strip():
                self.port = int(text.splitlines()[0])
                break
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"chromium opened no DevTools port within {timeout_s}s: {self.log_tail()}")
            time.sleep(0.05)  # sleep-ok: polling for chromium's port file, within the deadline

    def page_ws_url(self) -> str:
        """The DevTools websocket of the (first) page."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as resp:
            targets = json.loads(resp.read())
        pages = [t for t in targets if t.get("type") == "page"]
        assert pages, f"chromium shows no page: {targets}"
        return str(pages[0]["webSocketDebuggerUrl"])

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)  # the group this Popen created
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # helpers left behind by the browser, if any
        self._log.close()


class PageError(AssertionError):
    pass


class Page:
    """One CDP session on a page (per event loop: an `async def` test opens its own)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next_id = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, ws_url: str) -> AsyncIterator[Page]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url, max_msg_size=0) as ws:
                yield cls(ws)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        mid = self._next_id
        await self._ws.send_str(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = await self._ws.receive(timeout=30)
            if msg.type != aiohttp.WSMsgType.TEXT:
                raise PageError(f"the DevTools websocket closed ({msg.type.name}) during {method}")
            data = json.loads(msg.data)
            if data.get("id") != mid:
                continue  # an event
            if "error" in data:
                raise PageError(f"{method}: {data['error']}")
            return dict(data["result"])

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise PageError(f"{expression!r} threw: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, ok: Callable[[Any], bool], *, timeout_s: float, what: str) -> Any:
        """Evaluate until ok(value); the value. The last value is in the failure
        (an expression that throws, e.g. while the page is still loading, is tried again)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        value: Any = None
        while True:
            try:
                value = await self.eval(expression)
            except PageError as exc:
                value = exc
            else:
                if ok(value):
                    return value
            if asyncio.get_running_loop().time() > deadline:
                raise PageError(f"the page did not show {what} within {timeout_s}s; last: {value!r}")
            await asyncio.sleep(0.2)  # sleep-ok: polling what the page shows, within the deadline

    async def navigate(self, url: str) -> None:
        await self.call("Page.navigate", url=url)

    async def screenshot(self, path: Path) -> None:
        r = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(r["data"]))
