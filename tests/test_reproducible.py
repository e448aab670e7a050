"""What CI installs is the lock, and nothing an upstream release changes can fail a comparison.

- the environment holds exactly the versions in ``uv.lock`` (via its export, requirements/lock.txt);
- requirements/lock.txt (what environment.yml installs) is the lock's current export;
- committed solution outputs (compared by strict nbval) name no package version, memory address,
  wall-clock timestamp or path of this machine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK_TXT = ROOT / "requirements" / "lock.txt"
EXTRAS = ("dev", "airflow", "redis")


def _locked() -> dict[str, tuple[str, Requirement]]:
    out: dict[str, tuple[str, Requirement]] = {}
    for line in LOCK_TXT.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        req = Requirement(line)
        pinned = next(iter(req.specifier))
        assert pinned.operator == "==", f"requirements/lock.txt: {line!r} is not pinned with =="
        out[req.name] = (pinned.version, req)
    return out


def _uv() -> str:
    for candidate in (ROOT / ".tools" / "bin" / "uv", shutil.which("uv")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("no uv found: `make install` bootstraps it into .tools/ (see the Makefile)")


def test_environment_holds_exactly_the_locked_versions():
    locked = _locked()
    assert len(locked) > 100, "the lock should pin the whole tree, not a handful of packages"
    wrong = []
    for name, (want, req) in sorted(locked.items()):
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            have = version(name)
        except PackageNotFoundError:
            wrong.append(f"{name}: locked {want}, not installed")
            continue
        if have != want:
            wrong.append(f"{name}: locked {want}, installed {have}")
    assert not wrong, "the environment is not the lock (run `make install`):\n" + "\n".join(wrong)


def test_requirements_export_matches_the_lock():
    cmd = [_uv(), "export", "--frozen", "--no-hashes", "--no-emit-project", "--no-header",
           *[f"--extra={e}" for e in EXTRAS]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "UV_PYTHON_DOWNLOADS": "never",
                               "UV_NO_CACHE": "1", "HOME": "/tmp"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == LOCK_TXT.read_text(encoding="utf-8"), (
        "requirements/lock.txt is not the export of uv.lock: run `make lock`")


def test_environment_yml_installs_the_exported_pins():
    text = (ROOT / "environment.yml").read_text(encoding="utf-8")
    assert "-r requirements/lock.txt" in text


# --- committed outputs ------------------------------------------------------------------------


def _output_texts() -> list[tuple[str, str]]:
    found = []
    for nb_path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text(encoding="utf-8"))
        for index, cell in enumerate(nb["cells"]):
            for out in cell.get("outputs", []):
                parts = [out.get("text", "")]
                parts += [v for k, v in out.get("data", {}).items() if k.startswith("text/")]
                for part in parts:
                    text = "".join(part) if isinstance(part, list) else str(part)
                    found.append((f"{nb_path.name} cell {index}", text))
    return found


def _installed_version_pattern() -> re.Pattern[str]:
    """``<installed distribution's name> <a version number>``: any version, not only the one
    installed today (an output written under yesterday's release names yesterday's version)."""
    names = {"python"}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            names |= {name, name.replace("-", "_"), name.replace("_", "-")}
    body = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"(?<![\w.-])(?:{body})(?:==| v?| version )\d+(?:\.\d+)+(?!\w)",
                      re.IGNORECASE)


_INSTALLED_VERSION = _installed_version_pattern()


def _version_mentions(text: str) -> list[str]:
    return [m.group(0) for m in _INSTALLED_VERSION.finditer(text)]


def test_committed_outputs_name_no_package_version():
    bad = [(where, hit) for where, text in _output_texts() for hit in _version_mentions(text)]
    assert not bad, f"stored outputs name package versions (sanitize them): {bad[:10]}"


def test_version_check_can_fail():
    import httpx

    assert _version_mentions(f"made with httpx {httpx.__version__}.") == [
        f"httpx {httpx.__version__}"]
    assert _version_mentions("gpt-4o-mini-2024-07-18 and httpx <version>") == []


def test_committed_outputs_hold_no_address_timestamp_or_machine_path():
    patterns = {
        "memory address": re.compile(r"\b0x[0-9a-fA-F]{8,}\b"),
        "wall-clock timestamp": re.compile(r"\b20\d\d-\d\d-\d\d[T ]\d\d:\d\d:\d\d"),
        "path of this machine": re.compile(re.escape(str(ROOT)) + r"|/tmp/|site-packages"),
    }
    bad = [(where, label, m.group(0)) for where, text in _output_texts()
           for label, rx in patterns.items() for m in rx.finditer(text)]
    assert not bad, f"stored outputs hold what changes from run to run: {bad[:10]}"


def test_sanitize_rules_cover_what_the_outputs_print():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from build_notebooks import _sanitize, _sanitize_rules
    finally:
        sys.path.pop(0)
    rules = _sanitize_rules()
    assert _sanitize("no price in genai-prices 0.2.3; at 0x7f3a2b1c4d50", rules) == (
        "no price in genai-prices <version>; at 0x<address>")
    assert _sanitize("model gpt-4o-2024-08-06", rules) == "model gpt-4o-2024-08-06"
