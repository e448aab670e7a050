"""Build the course notebooks from their single source (``make notebooks``).

Every jupytext percent script ``solutions/NN_name.py`` becomes:

- ``solutions/NN_name.ipynb``: solution regions kept (markers removed), executed with nbclient
  (cwd = solutions/, store_widget_state=False), outputs stored, so strict ``pytest --nbval``
  passes on it;
- ``notebooks/NN_name.ipynb``: the student version: every solution region replaced by a stub
  (``# YOUR CODE HERE`` + ``raise NotImplementedError("...")``), no outputs, execution_count null.

Cell ids are stable: a check cell (tags ``check`` + ``task:N``) gets ``check-taskN``, every other
cell ``<stem>-<index:02d>``. Output is deterministic: building twice gives byte-identical files
(sorted keys, nbformat 4.5, minimal metadata, nbclient's timing metadata stripped).

Usage::

    python tools/build_notebooks.py                 # build everything (executes solutions)
    python tools/build_notebooks.py --only 01       # one notebook (stem, file name or prefix)
    python tools/build_notebooks.py --no-execute    # skip execution (solution outputs empty)
    python tools/build_notebooks.py --check         # exit 1 listing out-of-date files, no writes

``--check`` is fast: it regenerates the student notebooks fully and compares bytes; for the
solution notebooks it compares everything except outputs and execution counts (those are
checked by running strict nbval on them) and requires that every code cell was executed.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jupytext
import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
NOTEBOOKS = ROOT / "notebooks"

NBFORMAT_MINOR = 5
CELL_TIMEOUT = 120
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}
NB_METADATA = {"kernelspec": KERNELSPEC, "language_info": {"name": "python"}}

_BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION(?:\s*:\s*(?P<msg>.*?))?\s*$")
_END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
_TASK_TAG = re.compile(r"^task:(\d+)$")
_PERCENT_CELL = re.compile(r"^# %%", re.MULTILINE)


class BuildError(Exception):
    """A source that cannot be built (bad markers, duplicate check cell, failing cell...)."""


# --- sources -----------------------------------------------------------------------------------


def is_notebook_source(path: Path) -> bool:
    """A ``.py`` under solutions/ is a notebook source when it has jupytext ``# %%`` cells."""
    if path.suffix != ".py" or path.name.startswith(("_", ".")):
        return False
    return bool(_PERCENT_CELL.search(path.read_text(encoding="utf-8")))


def find_sources(only: list[str] | None = None) -> list[Path]:
    sources = sorted(p for p in SOLUTIONS.glob("*.py") if is_notebook_source(p))
    if not only:
        return sources
    chosen: list[Path] = []
    for name in only:
        key = Path(name).name
        for suffix in (".py", ".ipynb"):
            if key.endswith(suffix):
                key = key[: -len(suffix)]
        exact = [p for p in sources if p.stem == key]
        matches = exact or [p for p in sources if p.stem.startswith(key)]
        if len(matches) != 1:
            names = ", ".join(p.stem for p in sources) or "none"
            what = "no" if not matches else "more than one"
            raise BuildError(f"--only {name!r}: {what} notebook source matches (sources: {names})")
        if matches[0] not in chosen:
            chosen.append(matches[0])
    return chosen


# --- solution regions --------------------------------------------------------------------------


def _split_regions(source: str, where: str) -> list[tuple[str, Any]]:
    """Parse a cell source into ("text", line) and ("region", (indent, msg, lines)) parts."""
    parts: list[tuple[str, Any]] = []
    lines = source.split("\n")
    i = 0
    while i < len(lines):
        m = _BEGIN.match(lines[i])
        if _END.match(lines[i]):
            raise BuildError(f"{where}: '### END SOLUTION' without a BEGIN (line {i + 1})")
        if not m:
            parts.append(("text", lines[i]))
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not _END.match(lines[i]):
            if _BEGIN.match(lines[i]):
                raise BuildError(f"{where}: nested '### BEGIN SOLUTION' (line {i + 1})")
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise BuildError(f"{where}: '### BEGIN SOLUTION' on line {start + 1} is never ended")
        i += 1  # skip END
        msg = (m.group("msg") or "").strip() or "implement this"
        parts.append(("region", (m.group("indent"), msg, body)))
    return parts


def render_source(source: str, *, student: bool, where: str = "cell") -> str:
    """The cell source for the solution (markers removed) or student (stubs) notebook."""
    if "### BEGIN SOLUTION" not in source and "### END SOLUTION" not in source:
        return source
    out: list[str] = []
    for kind, value in _split_regions(source, where):
        if kind == "text":
            out.append(value)
            continue
        indent, msg, body = value
        if student:
            out.append(f"{indent}# YOUR CODE HERE")
            out.append(f"{indent}raise NotImplementedError({json.dumps(msg, ensure_ascii=False)})")
        else:
            out.extend(body)
    return "\n".join(out)


# --- notebooks ---------------------------------------------------------------------------------


@dataclass
class Built:
    source: Path
    solution: Any  # NotebookNode, not executed
    student: Any

    @property
    def stem(self) -> str:
        return self.source.stem

    @property
    def solution_path(self) -> Path:
        return SOLUTIONS / f"{self.stem}.ipynb"

    @property
    def student_path(self) -> Path:
        return NOTEBOOKS / f"{self.stem}.ipynb"


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []) or [])


def _cell_id(stem: str, index: int, cell: Any, where: str) -> str:
    tags = _tags(cell)
    if "check" in tags:
        tasks = [m.group(1) for t in tags if (m := _TASK_TAG.match(t))]
        if len(tasks) != 1 or cell.cell_type != "code":
            raise BuildError(f"{where}: a check cell needs exactly one 'task:N' tag and code")
        return f"check-task{tasks[0]}"
    cid = f"{stem}-{index:02d}"
    return re.sub(r"[^A-Za-z0-9_-]", "-", cid)[:64]


def _clean_cell(cell: Any, cid: str, source: str) -> Any:
    tags = _tags(cell)
    meta = {"tags": tags} if tags else {}
    if cell.cell_type == "code":
        new = nbformat.v4.new_code_cell(source=source, metadata=meta)
        new.outputs = []
        new.execution_count = None
    elif cell.cell_type == "markdown":
        new = nbformat.v4.new_markdown_cell(source=source, metadata=meta)
    else:
        new = nbformat.v4.new_raw_cell(source=source, metadata=meta)
    new["id"] = cid
    return new


def build(source: Path) -> Built:
    """Read one percent script; return the (unexecuted) solution and student notebooks."""
    text = source.read_text(encoding="utf-8")
    nb = jupytext.reads(text, fmt="py:percent")
    stem = source.stem
    sol_cells, stu_cells, seen = [], [], set()
    for index, cell in enumerate(nb.cells):
        where = f"{source.name} cell {index}"
        cid = _cell_id(stem, index, cell, where)
        if cid in seen:
            raise BuildError(f"{where}: duplicate cell id {cid!r} (one check cell per task)")
        seen.add(cid)
        src = cell.source
        sol_cells.append(_clean_cell(cell, cid, render_source(src, student=False, where=where)))
        stu_src = render_source(src, student=True, where=where) if cell.cell_type == "code" else src
        if cell.cell_type != "code" and "### BEGIN SOLUTION" in src:
            raise BuildError(f"{where}: solution markers are only allowed in code cells")
        stu_cells.append(_clean_cell(cell, cid, stu_src))
    return Built(source, _new_nb(sol_cells), _new_nb(stu_cells))


def _new_nb(cells: list[Any]) -> Any:
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(NB_METADATA))
    nb.nbformat, nb.nbformat_minor = 4, NBFORMAT_MINOR
    return nb


def _merge_streams(outputs: list[Any]) -> list[Any]:
    """Join consecutive stream outputs of the same name: how a print is split into messages
    depends on timing (flushes), so unmerged outputs would differ from build to build."""
    merged: list[Any] = []
    for out in outputs:
        prev = merged[-1] if merged else None
        if (
            out.get("output_type") == "stream"
            and prev is not None
            and prev.get("output_type") == "stream"
            and prev.get("name") == out.get("name")
        ):
            prev["text"] = prev["text"] + out["text"]
        else:
            merged.append(out)
    return merged


SANITIZE_FILE = ROOT / "tools" / "nbval_sanitize.cfg"


def _sanitize_rules() -> list[tuple[re.Pattern[str], str]]:
    """The regex rules nbval applies before comparing (nbval's own parser, one file for both)."""
    from nbval.plugin import get_sanitize_patterns

    text = SANITIZE_FILE.read_text(encoding="utf-8")
    return [(re.compile(rx), rep) for rx, rep in get_sanitize_patterns(text)]


def _sanitize(value: Any, rules: list[tuple[re.Pattern[str], str]]) -> Any:
    if isinstance(value, str):
        for rx, rep in rules:
            value = rx.sub(rep, value)
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return _sanitize("".join(value), rules)
    return value


def sanitize_outputs(nb: Any) -> None:
    """Store outputs as nbval will compare them: no package versions, addresses or timestamps
    (what changes without our doing), so an upstream release cannot fail strict nbval."""
    rules = _sanitize_rules()
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if "text" in out:
                out["text"] = _sanitize(out["text"], rules)
            for key, value in out.get("data", {}).items():
                if key.startswith("text/"):
                    out["data"][key] = _sanitize(value, rules)


def normalize_executed(nb: Any) -> Any:
    """Drop what nbclient adds that is not deterministic or not needed."""
    nb.metadata = copy.deepcopy(NB_METADATA)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for key in list(cell.metadata):
            if key != "tags":
                cell.metadata.pop(key)
        if cell.cell_type == "code":
            cell.outputs = _merge_streams(cell.outputs)
        for out in cell.get("outputs", []):
            if "metadata" in out:
                out["metadata"] = {k: v for k, v in out["metadata"].items() if k != "execution"}
    _stable_widget_ids(nb)
    sanitize_outputs(nb)
    return nb


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _stable_widget_ids(nb: Any) -> None:
    """Widget model ids are random per run; no kernel will know them when the notebook is
    opened anyway (the view falls back to its text), so number them to keep builds identical."""
    ids: dict[str, str] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            view = out.get("data", {}).get(WIDGET_VIEW)
            if isinstance(view, dict) and "model_id" in view:
                view["model_id"] = ids.setdefault(view["model_id"], f"widget-{len(ids) + 1}")


def dumps(nb: Any) -> str:
    """nbformat's own writer (sorted keys, indent 1, sources split in lines) + a final newline."""
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4) + "\n"


def execute(nb: Any, name: str) -> Any:
    """Run a solution notebook with nbclient in solutions/ and return it normalized."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = copy.deepcopy(nb)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(SOLUTIONS)}},
        store_widget_state=False,
        record_timing=False,
        allow_errors=False,
    )
    try:
        client.execute(cwd=str(SOLUTIONS))
    except CellExecutionError as exc:
        raise BuildError(f"{name}: a cell failed while executing the solution:\n{exc}") from None
    except (CellTimeoutError, DeadKernelError) as exc:
        raise BuildError(f"{name}: {type(exc).__name__}: {exc}") from None
    return normalize_executed(nb)


def _execute_job(args: tuple[str, str]) -> tuple[str, str, float]:
    text, name = args
    t0 = time.perf_counter()
    nb = nbformat.reads(text, as_version=4)
    out = dumps(execute(nb, name))
    return name, out, time.perf_counter() - t0


# --- check mode --------------------------------------------------------------------------------


def _skeleton(nb: Any) -> Any:
    """A notebook without outputs and execution counts, for the solution comparison."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return json.loads(json.dumps(nb, sort_keys=True))


def check_one(b: Built) -> list[str]:
    """Why the committed notebooks of one source are out of date (empty: up to date)."""
    problems: list[str] = []
    rel = lambda p: p.relative_to(ROOT).as_posix()  # noqa: E731
    if not b.student_path.exists():
        problems.append(f"{rel(b.student_path)}: missing")
    elif b.student_path.read_text(encoding="utf-8") != dumps(b.student):
        problems.append(f"{rel(b.student_path)}: differs from {rel(b.source)}")
    if not b.solution_path.exists():
        problems.append(f"{rel(b.solution_path)}: missing")
        return problems
    try:
        committed = nbformat.reads(b.solution_path.read_text(encoding="utf-8"), as_version=4)
    except Exception as exc:  # unreadable JSON / notebook
        problems.append(f"{rel(b.solution_path)}: unreadable ({exc})")
        return problems
    if _skeleton(committed) != _skeleton(b.solution):
        problems.append(f"{rel(b.solution_path)}: cells differ from {rel(b.source)}")
    elif any(c.cell_type == "code" and c.execution_count is None for c in committed.cells):
        problems.append(f"{rel(b.solution_path)}: not executed (built with --no-execute?)")
    return problems


# --- main --------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> bool:
    """Write only when the content changes (keeps mtimes and diffs quiet)."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="list out-of-date files, write nothing")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="build one notebook (repeatable)")
    p.add_argument("--no-execute", action="store_true", help="do not execute the solutions")
    p.add_argument("-j", "--jobs", type=int, default=None, help="notebooks executed at once")
    args = p.parse_args(argv)

    try:
        sources = find_sources(args.only)
        built = [build(s) for s in sources]
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not built:
        print("no notebook sources found in solutions/", file=sys.stderr)
        return 2 if args.only else 0

    if args.check:
        problems = [msg for b in built for msg in check_one(b)]
        for msg in problems:
            print(msg)
        if problems:
            print(f"{len(problems)} notebook file(s) out of date: run `make notebooks`")
            return 1
        print(f"{2 * len(built)} notebook files up to date")
        return 0

    t_all = time.perf_counter()
    for b in built:
        if _write(b.student_path, dumps(b.student)):
            print(f"wrote {b.student_path.relative_to(ROOT)}")
    if args.no_execute:
        for b in built:
            if _write(b.solution_path, dumps(b.solution)):
                print(f"wrote {b.solution_path.relative_to(ROOT)} (not executed)")
        return 0

    jobs = args.jobs or max(1, min(len(built), os.cpu_count() or 1))
    payload = [(dumps(b.solution), b.stem) for b in built]
    paths = {b.stem: b.solution_path for b in built}
    failed = 0
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_execute_job, item) for item in payload]
        for fut in futures:
            try:
                name, text, secs = fut.result()
            except Exception as exc:
                print(f"error: {exc}", file=sys.stderr)
                failed += 1
                continue
            changed = _write(paths[name], text)
            state = "wrote" if changed else "unchanged"
            print(f"{state} {paths[name].relative_to(ROOT)} (executed in {secs:.1f} s)")
    print(f"built {len(built)} notebook(s) in {time.perf_counter() - t_all:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
