"""pytest plugin for grading: maps nbval cells to tasks by their tags, records pass/fail per task.

Load it with ``-p llm_patterns.course.grading.nbplugin --grade-json FILE``. A check cell carries the
tags ``check`` and ``task:N``; a task passes when every one of its check cells passed (a check
cell that errors, times out, or is skipped scores 0).
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

__all__ = ["task_of_cell"]


def task_of_cell(cell: Any) -> str | None:
    """``"taskN"`` for a check cell (tags ``check`` and ``task:N``), else None."""
    tags = list((getattr(cell, "metadata", None) or {}).get("tags", []) or [])
    if "check" not in tags:
        return None
    for tag in tags:
        if isinstance(tag, str) and tag.startswith("task:") and tag[5:].strip():
            return "task" + tag[5:].strip()
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llm_patterns grading")
    group.addoption("--grade-json", default=None, help="write per-task results to this file")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Recorder(config), "llm-patterns-grade-recorder")


class _Recorder:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.items: dict[str, str] = {}
        self.tasks: dict[str, dict[str, Any]] = {}

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            task = task_of_cell(getattr(item, "cell", None))
            if task is None:
                continue
            notebook = os.path.basename(str(item.path))
            item.user_properties.append(("task", task))
            self.items[item.nodeid] = task
            entry = self.tasks.setdefault(task, {"notebooks": [], "cells": {}})
            if notebook not in entry["notebooks"]:
                entry["notebooks"].append(notebook)
            entry["cells"][item.nodeid] = None  # not run (yet)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        task = self.items.get(report.nodeid)
        if task is None:
            return
        cells = self.tasks[task]["cells"]
        if report.when == "call":
            # an XPASS (after an earlier cell timed out) is a pass; an xfail is not
            cells[report.nodeid] = report.passed and cells.get(report.nodeid) is not False
        elif report.failed or report.skipped:
            cells[report.nodeid] = False

    def pytest_sessionfinish(self) -> None:
        path = self.config.getoption("--grade-json")
        if not path:
            return
        out = {
            task: {
                "notebooks": entry["notebooks"],
                "passed": bool(entry["cells"]) and all(v is True for v in entry["cells"].values()),
                "cells": entry["cells"],
            }
            for task, entry in self.tasks.items()
        }
        with open(path, "w", encoding="utf-8") as fh:
            json.dump({"tasks": out}, fh, indent=2, sort_keys=True)
