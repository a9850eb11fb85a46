"""What every console command shares: an error the user can act on ends the command with one line naming it and exit
status 2, not a traceback (bad input, a missing or unwritable file, an unreachable service)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError)


@contextmanager
def exit_on_error(parser: argparse.ArgumentParser, errors: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """Within the block, `USER_ERRORS` (and `errors`) end the program as `PROG: error: MESSAGE`, status 2."""
    try:
        yield
    except (*USER_ERRORS, *errors) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
