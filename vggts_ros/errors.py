"""Errors a user can cause, and how a command reports them.

:class:`UsageError` is what every command raises for bad input (a missing file, sizes
that do not match, an unknown option value): :func:`run_command` prints its message on
one line and returns exit status 2, never a traceback. The ``vggts`` dispatcher
(``vggts_ros.cli``) and ``python -m vggts_ros.training.cli`` share it; nothing here
imports another module of the package.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


class UsageError(Exception):
    """A problem with the user's input, reported without a traceback."""


def run_command(parser: argparse.ArgumentParser, argv: Optional[List[str]] = None) -> int:
    """Parse ``argv``, run the chosen sub-command (``args.func``) and return its exit
    status; a :class:`UsageError` becomes ``<prog> <command>: error: <message>`` on
    stderr and status 2."""
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
