"""A real browser for the tests: Debian's headless Chromium, driven through its chromedriver by selenium.

- :func:`serve` serves a folder on 127.0.0.1 (a free port, a thread) for as long as the block runs:
  pages that fetch JSON (asv's) cannot be read from ``file://``.
- :func:`browser` starts Chromium headless at a given window size with the flags a closed network
  needs (no background networking, no component updates, a fresh profile) and quits it after the
  block. Without ``chromium`` / ``chromedriver`` on PATH (``.ci/system-deps`` installs them) the test
  is skipped with that reason.
- :func:`screenshot` saves the window as ``<name>.png`` into ``$HARNESS_SCREENSHOT_DIR`` when it is
  set (``HARNESS_SCREENSHOT_DIR=tests/screenshots`` refreshes the README's pictures), else into the
  given fallback folder, and returns the path.
- :func:`terminal_screenshot` does the same for text a terminal showed (``<name>.svg``, drawn by rich).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """``http://127.0.0.1:<port>/`` serving ``folder`` while the block runs."""
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser(width: int = 1400, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium window of ``width`` x ``height`` CSS pixels (a selenium WebDriver)."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/system-deps installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the `test` extra)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in FLAGS + [f"--window-size={width},{height}", f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        session.set_window_size(width, height)
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


def screenshot(session: Any, name: str, fallback: Path) -> Path:
    """Save the window as ``<name>.png`` (see the module docstring for where) and return its path."""
    folder = Path(os.environ.get("HARNESS_SCREENSHOT_DIR") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    session.save_screenshot(str(path))
    return path


def terminal_screenshot(text: str, name: str, fallback: Path, width: int = 120) -> Path:
    """Save ``text`` as a terminal of ``width`` columns shows it, ``<name>.svg`` (see :func:`screenshot` for where)."""
    from rich.console import Console
    from rich.text import Text

    folder = Path(os.environ.get("HARNESS_SCREENSHOT_DIR") or fallback)
    folder.mkdir(parents=True, exist_ok=True)
    console = Console(width=width, record=True, file=open(os.devnull, "w"), force_terminal=True)
    console.print(Text(text), soft_wrap=False, overflow="fold")
    path = folder / f"{name}.svg"
    console.save_svg(str(path), title=name)
    console.file.close()
    return path
