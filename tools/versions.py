"""Print the installed version of each named distribution on one line (``make install`` shows
the key ones, so a CI log says exactly what ran)."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version


def describe(names: list[str]) -> str:
    parts = []
    for name in names:
        try:
            parts.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    return "installed from uv.lock: " + ", ".join(parts)


if __name__ == "__main__":
    print(describe(sys.argv[1:]))
