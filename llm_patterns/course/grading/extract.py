"""What ``grade`` runs of a submission: each task's own definitions, found by their names.

A submission is a folder of notebooks (``.ipynb``) and Python files (``.py``). For a task that
defines ``TokenBucket`` and ``RateLimiter`` the grader looks for the document that defines both
(by ``class``/``def``/assignment, whatever the file is called), then keeps only the top-level
statements those names need: their definitions, the imports and helpers they use, and the
statements that change them, up to the task's check cell. Plots, simulations and demos are left
out, so grading runs the graded code only, and fast.

Everything here is static: parsing, never running, the student's code.
"""

from __future__ import annotations

import ast
import json
import re
import symtable
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sandbox import read_no_follow

__all__ = ["Document", "NotFound", "Program", "find_program", "load_documents"]

MAX_DOCUMENT = 20 << 20  # bytes of one notebook or file
SUFFIXES = (".ipynb", ".py")
LIBRARY = "llm_patterns"
_STRIPPED_CELL_MAGICS = ("time", "timeit", "capture", "prun")


@dataclass
class Cell:
    index: int  # position among the document's code cells, from 1
    source: str
    tags: tuple[str, ...] = ()
    cell_id: str = ""


@dataclass
class Document:
    """One notebook or Python file of a submission, as code cells (a .py file is one cell)."""

    path: str  # relative to the submission folder
    cells: list[Cell] = field(default_factory=list)
    error: str | None = None  # why it could not be read


@dataclass
class Program:
    """A task's code, ready for the worker: chunks of (file name, source, full cell source)."""

    document: str
    chunks: list[dict[str, str]]
    names: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


@dataclass
class NotFound:
    """Why a task has nothing to grade."""

    reason: str
    document: str = ""


# --- reading ----------------------------------------------------------------------------


def load_documents(root: Path, skip: Iterable[str] = ()) -> tuple[list[Document], list[str]]:
    """Every notebook and Python file under ``root`` (no symbolic link followed), and notes
    about what was left out (links, unreadable files)."""
    documents: list[Document] = []
    notes: list[str] = []
    skipped = set(skip)

    def walk(folder: Path, rel: str) -> None:
        try:
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError as exc:
            notes.append(f"{rel or '.'}: cannot be listed ({exc.strerror})")
            return
        for entry in entries:
            name = f"{rel}/{entry.name}" if rel else entry.name
            if entry.name.startswith(".") or entry.name in skipped:
                continue
            if entry.is_symlink():
                if entry.suffix in SUFFIXES:
                    notes.append(f"{name} is a symbolic link: not graded (submit the file itself)")
                continue
            if entry.is_dir():
                if entry.name not in ("__pycache__", "node_modules"):
                    walk(entry, name)
            elif entry.suffix in SUFFIXES and entry.is_file():
                documents.append(read_document(entry, name))

    walk(root, "")
    return documents, notes


def read_document(path: Path, name: str) -> Document:
    try:
        data = read_no_follow(path, MAX_DOCUMENT)
    except OSError as exc:
        return Document(name, error=f"cannot be read: {exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Document(name, error=f"is not UTF-8 text ({exc.reason} at byte {exc.start})")
    if path.suffix == ".py":
        return Document(name, [Cell(1, text)])
    try:
        nb = json.loads(text)
    except ValueError as exc:
        return Document(name, error=f"is not a valid notebook (JSON error: {exc})")
    if not isinstance(nb, dict) or not isinstance(nb.get("cells", nb.get("worksheets")), list):
        return Document(name, error="is not a valid notebook (no list of cells)")
    raw_cells = nb.get("cells")
    if raw_cells is None:  # nbformat 3
        raw_cells = [c for ws in nb.get("worksheets", []) if isinstance(ws, dict)
                     for c in ws.get("cells", [])]
    cells = []
    number = 0
    for raw in raw_cells:
        if not isinstance(raw, dict) or raw.get("cell_type") != "code":
            continue
        number += 1
        source = raw.get("source", raw.get("input", ""))
        if isinstance(source, list):
            source = "".join(str(s) for s in source)
        meta = raw.get("metadata") if isinstance(raw.get("metadata"), dict) else {}
        tags = meta.get("tags", []) if isinstance(meta, dict) else []
        tag_list = tuple(str(t) for t in tags if isinstance(t, str)) if isinstance(tags, list) \
            else ()
        cells.append(Cell(number, str(source), tag_list, str(raw.get("id", ""))))
    return Document(name, cells)


# --- statements -------------------------------------------------------------------------


@dataclass
class _Stmt:
    cell: Cell
    node: ast.stmt
    start: int
    end: int
    defs: set[str]
    uses: set[str]
    mutates: set[str]
    star: bool = False


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


class _Binder(ast.NodeVisitor):
    """Names a top-level statement binds at module level (not inside functions or classes)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.star = False

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, (ast.Store, ast.Del)):
            self.names.add(node.id)

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.names.add(node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.names.add(node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        return

    def visit_ListComp(self, node: ast.AST) -> None:
        return

    visit_SetComp = visit_DictComp = visit_GeneratorExp = visit_ListComp

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.names.add(alias.asname or alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.name == "*":
                self.star = True
            else:
                self.names.add(alias.asname or alias.name)

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self.names.add(node.name)
        self.generic_visit(node)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        if isinstance(node.target, ast.Name):
            self.names.add(node.target.id)
        self.visit(node.value)


def _uses(node: ast.AST) -> set[str]:
    """Module-level names a statement reads: at its own level, and the globals its functions
    and classes refer to (a function's own locals and parameters do not count)."""
    try:
        table = symtable.symtable(ast.unparse(node), "<statement>", "exec")
    except (SyntaxError, ValueError, RecursionError):
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)
                and isinstance(n.ctx, ast.Load)}
    out: set[str] = set()

    def visit(t: symtable.SymbolTable, top: bool) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and (top or sym.is_global()):
                out.add(sym.get_name())
        for child in t.get_children():
            visit(child, False)

    visit(table, True)
    return out


def _mutates(node: ast.stmt) -> set[str]:
    out: set[str] = set()
    targets: list[ast.AST] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    elif isinstance(node, ast.Delete):
        targets = list(node.targets)
    elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
        func = node.value.func
        if isinstance(func, ast.Attribute):
            root = _root_name(func.value)
            if root:
                out.add(root)
    for target in targets:
        for t in ast.walk(target):
            if isinstance(t, (ast.Attribute, ast.Subscript)):
                root = _root_name(t)
                if root:
                    out.add(root)
    return out


def _statement(cell: Cell, node: ast.stmt) -> _Stmt:
    binder = _Binder()
    binder.visit(node)
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return _Stmt(cell, node, start, node.end_lineno or node.lineno, binder.names, _uses(node),
                 _mutates(node), binder.star)


def _parse_cell(cell: Cell) -> tuple[str, ast.Module] | SyntaxError:
    source = _strip_cell_magic(cell.source)
    try:
        return source, ast.parse(source)
    except SyntaxError as first:
        try:
            from IPython.core.inputtransformer2 import TransformerManager
        except ImportError:
            return first
        try:
            transformed = TransformerManager().transform_cell(source)
            return transformed, ast.parse(transformed)
        except (SyntaxError, ValueError):
            return first


def _strip_cell_magic(source: str) -> str:
    """Blank a leading ``%%time``-like line (keeping the line count); the code still counts."""
    lines = source.split("\n")
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("%%"):
            magic = stripped[2:].split()[0] if len(stripped) > 2 else ""
            if magic in _STRIPPED_CELL_MAGICS:
                lines[i] = ""
        break
    return "\n".join(lines)


# --- which document, which statements -----------------------------------------------------


def _is_check_cell(cell: Cell, task: int) -> bool:
    tags = set(cell.tags)
    return (("check" in tags and f"task:{task}" in tags) or cell.cell_id == f"check-task{task}"
            or re.search(rf"\bcheck_task{task}\s*\(", cell.source) is not None)


def _stub(node: ast.AST) -> bool:
    """A definition whose every body is only ``raise NotImplementedError``/``pass``/``...``."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        body = list(node.body)
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        for stmt in body:
            if isinstance(stmt, ast.Pass) or (
                isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            ):
                continue
            if isinstance(stmt, ast.Raise) and stmt.exc is not None and \
                    _root_name(stmt.exc) == "NotImplementedError":
                continue
            return False
        return True
    if isinstance(node, ast.ClassDef):
        methods = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        others = [n for n in node.body if not isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                             ast.Pass, ast.Expr))]
        return not others and all(_stub(m) for m in methods)
    return False


@dataclass
class _Candidate:
    doc: Document
    statements: list[_Stmt]
    syntax_errors: list[str]
    cutoff: int | None  # index in statements: the first statement of the check cell


def _analyse(doc: Document, task: int, names: Sequence[str]) -> _Candidate:
    statements: list[_Stmt] = []
    errors: list[str] = []
    first_check: int | None = None
    defined: set[str] = set()
    for cell in doc.cells:
        is_check = _is_check_cell(cell, task)
        if is_check and first_check is None and defined >= set(names):
            first_check = len(statements)
        if "check" in cell.tags:
            continue
        parsed = _parse_cell(cell)
        if isinstance(parsed, SyntaxError):
            defines = (re.search(rf"^\s*(class|def)\s+{re.escape(n)}\b", cell.source, re.M)
                       for n in names)
            if any(defines):
                errors.append(f"cell {cell.index}: SyntaxError: {parsed.msg} "
                              f"(line {parsed.lineno})")
            continue
        source, module = parsed
        cell.source = source
        for node in module.body:
            st = _statement(cell, node)
            statements.append(st)
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef, ast.Assign,
                                 ast.AnnAssign)):
                defined |= st.defs
    return _Candidate(doc, statements, errors, first_check)


def _own_definitions(c: _Candidate, names: Sequence[str], imports: bool = False
                     ) -> dict[str, ast.stmt]:
    """For each task name, its last binding before the cut-off (imports count only when
    ``imports``: a notebook that imports ``CostTracker`` does not define it)."""
    found: dict[str, ast.stmt] = {}
    end = len(c.statements) if c.cutoff is None else c.cutoff
    for st in c.statements[:end]:
        if not imports and isinstance(st.node, (ast.Import, ast.ImportFrom)):
            continue
        for name in names:
            if name in st.defs:
                found[name] = st.node
    return found


def _library_names(statements: Iterable[_Stmt]) -> set[str]:
    """Names bound by imports from the library itself (``import llm_patterns as lp``...)."""
    out: set[str] = set()
    for st in statements:
        node = st.node
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == LIBRARY or alias.name.startswith(LIBRARY + "."):
                    out.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and (
            node.module == LIBRARY or node.module.startswith(LIBRARY + ".")
        ) and not node.module.startswith(LIBRARY + ".errors"):
            for alias in node.names:
                out.add(alias.asname or alias.name)
    return out


def _borrowed(name: str, node: ast.stmt, library: set[str]) -> str | None:
    """Why ``name`` is the library's rather than the student's own, or None."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        if name in library:
            return f"{name} is imported from {LIBRARY}: the task is to write your own"
        return None
    if isinstance(node, ast.ClassDef):
        for base in node.bases:
            root = _root_name(base)
            if root in library:
                return (f"{name} is built on {LIBRARY}'s class ({ast.unparse(base)}): the task is "
                        "to write your own")
        return None
    if isinstance(node, ast.Assign) and not isinstance(node.value, ast.Lambda):
        root = _root_name(node.value)
        if root in library:
            return (f"{name} is {LIBRARY}'s ({ast.unparse(node.value)[:60]}): the task is to "
                    "write your own")
    return None


def find_program(documents: Sequence[Document], task: int, names: Sequence[str],
                 canonical: str = "") -> Program | NotFound:
    """The program that defines ``names`` for ``task``, or why there is none."""
    candidates = []
    for doc in documents:
        if doc.error is not None:
            continue
        c = _analyse(doc, task, names)
        # every name bound, at least one by the student's own code (a notebook that only
        # imports the library's CostTracker is not a candidate; one that imports half is)
        if (set(_own_definitions(c, names, imports=True)) >= set(names)
                and _own_definitions(c, names)) or c.syntax_errors:
            candidates.append(c)
    if not candidates:
        unreadable = [f"{d.path} {d.error}" for d in documents if d.error is not None]
        base = f"no notebook defines {' and '.join(names)}"
        looked = [d.path for d in documents]
        if canonical:
            mine = [d for d in documents if Path(d.path).name == canonical]
            if mine and mine[0].error is not None:
                return NotFound(f"{mine[0].path} {mine[0].error}", mine[0].path)
            if not mine:
                base += f" ({canonical} is missing)"
        extra = f"; unreadable: {'; '.join(unreadable)}" if unreadable else ""
        more = "…" if len(looked) > 8 else ""
        seen = f" (looked in {', '.join(looked[:8])}{more})" if looked else ""
        return NotFound(base + seen + extra)

    def rank(c: _Candidate) -> tuple[int, int, int, str]:
        defs = _own_definitions(c, names)
        real = any(not _stub(node) for node in defs.values())
        tagged = any(_is_check_cell(cell, task) or f"task:{task}" in cell.tags
                     for cell in c.doc.cells)
        return (0 if real else 1, 0 if tagged else 1,
                0 if Path(c.doc.path).name == canonical else 1, c.doc.path)

    best = min(candidates, key=rank)
    if best.syntax_errors and set(_own_definitions(best, names, imports=True)) < set(names):
        return NotFound(f"{best.doc.path}: {best.syntax_errors[0]}", best.doc.path)
    return _slice(best, names)


def _slice(c: _Candidate, names: Sequence[str]) -> Program | NotFound:
    end = len(c.statements) if c.cutoff is None else c.cutoff
    statements = c.statements[:end]
    defs = _own_definitions(c, names, imports=True)
    library = _library_names(statements)
    for name in names:
        why = _borrowed(name, defs[name], library)
        if why is not None:
            return NotFound(why, c.doc.path)
    needed = set(names)
    included: set[int] = set()
    changed = True
    while changed:
        changed = False
        bound = set().union(*(st.defs for st in statements)) if statements else set()
        for i, st in enumerate(statements):
            if i in included:
                continue
            if st.defs & needed or st.mutates & needed or (st.star and needed - bound):
                included.add(i)
                needed |= st.uses | st.mutates
                changed = True
    chunks: list[dict[str, str]] = []
    by_cell: dict[int, list[_Stmt]] = {}
    order: list[Cell] = []
    for i in sorted(included):
        st = statements[i]
        if st.cell.index not in by_cell:
            by_cell[st.cell.index] = []
            order.append(st.cell)
        by_cell[st.cell.index].append(st)
    for cell in order:
        lines = cell.source.split("\n")
        keep: set[int] = set()
        for st in by_cell[cell.index]:
            keep.update(range(st.start, st.end + 1))
        text = "\n".join(line if n in keep else "" for n, line in enumerate(lines, 1))
        filename = c.doc.path
        if filename.endswith(".ipynb"):
            filename = f"{filename} (cell {cell.index})"
        chunks.append({"filename": filename, "source": text, "full": cell.source})
    notes = [f"{c.doc.path}: {e}" for e in c.syntax_errors]
    return Program(c.doc.path, chunks, tuple(names), notes)


def describe_documents(documents: Sequence[Document]) -> dict[str, Any]:
    return {d.path: (d.error or f"{len(d.cells)} code cells") for d in documents}
