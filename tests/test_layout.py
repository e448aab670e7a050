"""The package's shape: the library never imports the course kit nor Airflow, and the moved
modules' old names (``llm_patterns.grading``, ``llm_patterns.airflow`` ...) are the very modules
under ``llm_patterns.course`` and ``llm_patterns.integrations``."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

import llm_patterns
from llm_patterns import _aliases


@pytest.mark.parametrize("name", _aliases.MOVED)
def test_old_names_are_the_same_module_objects(name):
    old = importlib.import_module(f"llm_patterns.{name}")
    new = importlib.import_module(f"llm_patterns.{_aliases.MOVED[name]}")
    assert old is new
    assert new.__spec__.name == f"llm_patterns.{_aliases.MOVED[name]}"


def test_old_submodule_names_resolve_to_the_same_module():
    import llm_patterns.grading.grade as old

    import llm_patterns.course.grading.grade as new

    assert old is new


def test_unknown_names_still_fail():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("llm_patterns.grading_typo")


def _core_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(llm_patterns.__path__, "llm_patterns."):
        if info.name.startswith(("llm_patterns.course", "llm_patterns.integrations",
                                 "llm_patterns.__main__")):
            continue
        names.append(info.name)
    return names


def test_the_library_never_imports_the_course_kit():
    code = (
        "import importlib, sys\n"
        f"for n in {_core_modules()!r}:\n"
        "    try: importlib.import_module(n)\n"
        "    except ImportError as e:\n"
        "        if 'redis' not in str(e): raise\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('llm_patterns.course', 'ipywidgets',"
        " 'plotly', 'anywidget', 'IPython', 'nbformat', 'airflow')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"the core imported course/notebook modules: {out.stdout}"
