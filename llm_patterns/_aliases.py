"""Old import names of moved modules, kept working.

The course kit moved from ``llm_patterns.grading`` (``widgets``, ``live``, ``demo``,
``simulation``, ``charts``) to ``llm_patterns.course.*``, and ``llm_patterns.airflow`` to
``llm_patterns.integrations.airflow``. Notebooks students already saved say
``from llm_patterns.grading import check_task1`` and DAGs say ``from llm_patterns.airflow
import ...``: this finder makes every old name, submodules included, the very same module object
as the new one (no second copy with its own state).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

# old name under llm_patterns -> its new name under llm_patterns
MOVED = {name: f"course.{name}"
         for name in ("grading", "widgets", "live", "demo", "simulation", "charts")}
MOVED["airflow"] = "integrations.airflow"
_OLD = tuple((f"llm_patterns.{old}", f"llm_patterns.{new}") for old, new in MOVED.items())


def new_name(fullname: str) -> str | None:
    """``llm_patterns.grading.grade`` -> ``llm_patterns.course.grading.grade``; None if the
    name did not move."""
    for old, new in _OLD:
        if fullname == old or fullname.startswith(old + "."):
            return new + fullname[len(old):]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target
        self.real_spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self.real_spec  # the import system set the alias's spec: undo it

    # for `python -m llm_patterns.grading.grade` (runpy asks the loader for the code)
    def _real_loader(self) -> importlib.abc.InspectLoader:
        spec = importlib.util.find_spec(self.target)
        assert spec is not None and isinstance(spec.loader, importlib.abc.InspectLoader)
        return spec.loader

    def get_code(self, fullname: str) -> object:
        return self._real_loader().get_code(self.target)

    def is_package(self, fullname: str) -> bool:
        return self._real_loader().is_package(self.target)


class AliasFinder(importlib.abc.MetaPathFinder):
    """Resolves an old module name to the module it moved to (``MOVED``)."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        target_name = new_name(fullname)
        if target_name is None:
            return None
        real = importlib.util.find_spec(target_name)
        if real is None:
            return None
        spec = importlib.machinery.ModuleSpec(
            fullname, _AliasLoader(target_name), origin=real.origin,
            is_package=real.submodule_search_locations is not None)
        spec.has_location = real.has_location  # `python -m` of an old name gets its __file__
        return spec


def install() -> None:
    if not any(isinstance(f, AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, AliasFinder())  # before PathFinder: no second copy
