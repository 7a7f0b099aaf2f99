"""Reports as PDF and as screenshots, through headless Chromium.

The compliance report and the comparison report are self-contained HTML
pages (no scripts, no outside resources, a print stylesheet). Their PDF is
that same page printed by Chromium, so what a reviewer reads on paper is what
the browser check (``scripts/browser-check.py``) looked at on screen.

Why Chromium and not a Python PDF library: WeasyPrint needs Pango and its
friends from the operating system (not installable from PyPI alone), and the
pure-Python routes (xhtml2pdf, reportlab) understand only a small part of CSS,
so the printed tables and banner would differ from the HTML page. Chromium
installs from the operating system's package registry (Debian:
``apt-get install chromium``); nothing is downloaded at run time.

The browser is found through ``FEDFRAUD_CHROMIUM`` (a path or a command name),
else the first of ``chromium``, ``chromium-browser``, ``google-chrome`` on
``PATH``. Every call uses a fresh, private profile folder and turns off the
browser's background networking, so printing a report opens no connection.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from core.errors import ConfigError, InputError

__all__ = ["CHROMIUM_ENV", "find_chromium", "html_to_pdf", "screenshot"]

CHROMIUM_ENV = "FEDFRAUD_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_TIMEOUT_S = 120.0


def find_chromium() -> str:
    """The Chromium executable to use; :class:`ConfigError` naming what to install if there is none."""
    wanted = os.environ.get(CHROMIUM_ENV, "").strip()
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            raise ConfigError(
                f"{CHROMIUM_ENV}={wanted!r} is not an executable file or a command on PATH"
            )
        return found
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise ConfigError(
        "PDF needs headless Chromium and none was found on PATH "
        f"(looked for {', '.join(_CANDIDATES)}). Install it from your package registry "
        f"(Debian/Ubuntu: apt-get install chromium) or set {CHROMIUM_ENV} to its path; "
        "the HTML report needs nothing"
    )


def _run(browser: str, action: list[str], page: Path) -> None:
    if not page.is_file():
        raise InputError(f"{page}: no such page to render")
    with tempfile.TemporaryDirectory(prefix="fedfraud-chromium-") as profile:
        command = [
            browser,
            "--headless",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            f"--user-data-dir={profile}",
            *action,
            page.resolve().as_uri(),
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            command.insert(2, "--no-sandbox")  # Chromium refuses its sandbox as root
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False,
                env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"},
            )
        except subprocess.TimeoutExpired as exc:
            raise ConfigError(f"{browser} did not finish rendering {page} within {_TIMEOUT_S:.0f} s") from exc
        except OSError as exc:
            raise ConfigError(f"{browser}: cannot start ({exc.strerror})") from exc
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise ConfigError(f"{browser} failed to render {page} (exit {done.returncode}): {tail}")


def _atomic_output(target: Path, suffix: str, magic: bytes, render: Callable[[Path], None]) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.unlink()
        render(tmp)
        if not tmp.is_file() or not tmp.read_bytes()[: len(magic)] == magic:
            raise ConfigError(f"the browser wrote no {suffix.lstrip('.').upper()} for {target}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def html_to_pdf(page: Path, pdf: Path) -> Path:
    """Print the HTML file ``page`` to ``pdf`` (A4 or the page's own ``@page`` size); return ``pdf``.

    ``pdf`` appears whole or not at all. Raises :class:`ConfigError` when no
    browser is installed or it fails, :class:`InputError` when ``page`` is missing.
    """
    browser = find_chromium()
    return _atomic_output(
        pdf, ".pdf", b"%PDF-",
        lambda tmp: _run(browser, [f"--print-to-pdf={tmp}", "--no-pdf-header-footer"], page),
    )


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 2400) -> Path:
    """A PNG of the HTML file ``page`` as a ``width`` x ``height`` window shows it; return ``png``."""
    browser = find_chromium()
    return _atomic_output(
        png, ".png", b"\x89PNG",
        lambda tmp: _run(browser, [f"--screenshot={tmp}", f"--window-size={width},{height}",
                                   "--hide-scrollbars"], page),
    )
