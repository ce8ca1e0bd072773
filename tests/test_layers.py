"""The layers of the tree (DESIGN.md, STYLE.md "Layers"): parts below, one driver above.

- the parts of medmo_rl (every module but medmo_rl/driver/ and the three thin entry points) never
  import sft, rollout, rewards or the driver, at any depth of the file (function bodies included);
- sft/, rollout/, rewards/ never import the driver;
- importing a part in a fresh interpreter loads no ray, vllm, fastapi, uvicorn, sft, rollout or rewards.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINTS = {"medmo_rl/run.py", "medmo_rl/eval.py", "medmo_rl/control.py", "medmo_rl/headroom.py"}  # thin: parse args, call the driver
LIBRARIES = ("sft", "rollout", "rewards")
HEAVY = ("ray", "vllm", "fastapi", "uvicorn", *LIBRARIES)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _parts() -> list[Path]:
    return sorted(p for p in (ROOT / "medmo_rl").rglob("*.py")
                  if "driver" not in p.relative_to(ROOT / "medmo_rl").parts and _rel(p) not in ENTRY_POINTS)


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement anywhere in the file names (absolute imports only)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [(node.lineno, node.module)]
            # `from medmo_rl import driver` names the driver too
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_scan_sees_nested_imports(tmp_path):
    # the scanner must find an import hidden in a function body, or the tests below could not fail
    f = tmp_path / "m.py"
    f.write_text("def f():\n    if True:\n        from rollout.pool import RolloutPool\n    from medmo_rl import driver\n")
    found = [m for _, m in _imported_modules(f)]
    assert "rollout.pool" in found and "medmo_rl.driver" in found


def test_parts_import_no_library_and_no_driver():
    bad = [f"{_rel(p)}:{line} imports {mod}" for p in _parts() for line, mod in _imported_modules(p)
           if any(_is_under(mod, lib) for lib in (*LIBRARIES, "medmo_rl.driver"))]
    assert not bad, "a part of medmo_rl reaches up:\n" + "\n".join(bad)


def test_libraries_never_import_the_driver():
    files = [p for lib in LIBRARIES for p in (ROOT / lib).rglob("*.py")]
    assert len(files) > 10
    bad = [f"{_rel(p)}:{line} imports {mod}" for p in files for line, mod in _imported_modules(p)
           if _is_under(mod, "medmo_rl.driver")]
    assert not bad, "a library imports the driver:\n" + "\n".join(bad)


def test_the_driver_is_not_imported_outside_it_but_by_the_entry_points():
    files = [p for p in ROOT.joinpath("medmo_rl").rglob("*.py") if "driver" not in p.relative_to(ROOT).parts]
    users = {_rel(p) for p in files for _, mod in _imported_modules(p) if _is_under(mod, "medmo_rl.driver")}
    assert users <= ENTRY_POINTS, users - ENTRY_POINTS
    assert users, "the entry points are meant to call into the driver"


@pytest.mark.parametrize("module", [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                                    for p in _parts() if p.name != "__main__.py"])
def test_importing_a_part_loads_nothing_heavy(module):
    code = ("import sys, importlib; importlib.import_module(%r); "
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & set(%r))))" % (module, HEAVY))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing {module} loads {out.stdout.strip()}"
