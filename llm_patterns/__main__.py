"""``python -m llm_patterns COMMAND``: a thin dispatcher over one module per subcommand.

A command module provides ``add_parser(subparsers) -> ArgumentParser`` (registering its own
name) and ``run(args) -> int``. Only the module of the command being run is imported, so a
broken or heavy command never slows down or breaks another. To add a command, add one line to
``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

# name -> (module, one-line help shown by --help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve-mock": ("llm_patterns.mock.cli", "serve the mock LLM API on 127.0.0.1 for real clients"),
    "demo": ("llm_patterns.course.demo", "simulate pipeline traffic through ResilientClient"),
    "grade": ("llm_patterns.course.grading.grade",
              "run notebooks and print a score table per task"),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="python -m llm_patterns",
        description="LLM retry patterns: the mock provider, demos and grading.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module_name, help_text) in COMMANDS.items():
        if name == chosen:
            module = importlib.import_module(module_name)
            sub = module.add_parser(subparsers)
            sub.set_defaults(_run=module.run)
        else:
            subparsers.add_parser(name, help=help_text, description=help_text)
    args = parser.parse_args(argv)
    run = getattr(args, "_run", None)
    if run is None:
        parser.print_help(sys.stderr if argv else sys.stdout)
        return 2 if argv else 0
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
