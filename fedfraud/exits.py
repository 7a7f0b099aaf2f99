"""How every ``fedfraud`` entry point ends: one mapping from errors to exit codes.

The codes themselves are the table in :mod:`core.errors`; each error class
carries its own. This module is the one place that turns a raised error, a
click usage error or an interrupt into a process exit, so ``fedfraud``,
``python -m fedfraud.provision`` and ``python -m fedfraud.deployment`` end the
same way.
"""

from __future__ import annotations

import click
import typer
from rich.console import Console
from rich.markup import escape

from core.errors import FedFraudError

#: Exit code after Ctrl-C or SIGTERM (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130


def run_app(typer_app: typer.Typer, interrupted: str = "aborted") -> None:
    """Run ``typer_app`` and exit with the code of how it ended.

    A product error prints ``error: <message>`` on standard error and exits
    with its class's code; a click usage error prints click's message and exits
    2; Ctrl-C prints ``interrupted`` and exits 130; ``typer.Exit(code)`` exits
    with ``code``. Anything else is a bug and propagates with its traceback.
    """
    err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False, markup=False)
    try:
        code = typer_app(standalone_mode=False)
    except FedFraudError as exc:
        # The message is text, not markup: brackets in it are shown as they are.
        err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True)
        raise SystemExit(exc.exit_code) from None
    except (click.exceptions.Abort, KeyboardInterrupt):
        err.print(interrupted)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except click.exceptions.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    # In non-standalone mode click returns the code of a typer.Exit instead of raising.
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)
