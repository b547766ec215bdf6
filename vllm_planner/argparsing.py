"""The argument parser every entry point uses: one error line naming the flag, never a usage dump.

argparse answers a bad flag with the whole usage (up to 30 lines) and then the error; here ``error``
prints just ``PROG: error: MESSAGE`` and exits 2 (``--help`` still prints the full help). An empty or
blank value for any flag or positional is refused before its type sees it: ``--gpu ''`` would
otherwise mean "not set", and ``Path('')`` is the current directory.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

EXIT_BAD_INPUT = 2


class OneLineArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message.removeprefix('argument ')}\n")

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:
        # A sub-command action gets the rest of the line: its own parser checks those values.
        if action.nargs not in (argparse.PARSER, argparse.REMAINDER) and isinstance(arg_string, str) \
                and not arg_string.strip():
            if action.option_strings:
                raise argparse.ArgumentError(
                    None, f"{'/'.join(action.option_strings)}: empty value (leave the flag out to use the default)")
            raise argparse.ArgumentError(None, f"{action.metavar or action.dest.upper()}: must not be empty")
        return super()._get_value(action, arg_string)


def fail(prog: str, message: str) -> NoReturn:
    """Exit 2 with one ``PROG: error: MESSAGE`` line (the message folded onto one line)."""
    sys.stderr.write(f"{prog}: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_BAD_INPUT)
