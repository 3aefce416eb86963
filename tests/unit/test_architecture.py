"""The shape of the package, checked over its import graph and its source.

Homes, lowest first; a module may import its own home and the homes below it, never one above:

    spec → maths → model → store → train → analysis → present → workflow → (api, errors, the package)

and the rules that keep each home what it claims to be: no import cycles; only ``store/`` names a
file (a literal such as "summary.json"); ``analysis/`` and ``present/`` open no file, and
``analysis/`` imports neither store's model loading nor its adapter reading (W0 and updates come in
as objects); ``present/`` never reaches torch, even indirectly; no module over 400 lines, no
function over 60. On top, cli/ calls only workflow, api and spec (each command one workflow call),
figures/ only reads (store, present, workflow), and nothing in the package imports cli/, figures/
or benchmarks/. Imports by ``importlib.import_module("lowrank_lab…")`` count as imports.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lowrank_lab"
SCRIPTS = {"cli": ROOT / "cli", "figures": ROOT / "figures", "benchmarks": ROOT / "benchmarks"}
HOMES = ("spec", "maths", "model", "store", "train", "analysis", "present", "workflow")
TOP = len(HOMES)  # lowrank_lab/__init__.py, api.py, errors.py, __main__.py
FILE_NAME = re.compile(r"^[\w.\-<>*]*\.(json|jsonl|safetensors|bin|csv|tsv|md|html|png|pdf|parquet|txt|toml|lock|gguf)$")
FILE_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "read_csv", "to_csv", "read_json",
              "to_json", "read_parquet", "to_parquet", "savefig", "mkdir", "unlink", "load_file", "save_file",
              "safe_open", "rmtree", "exists", "iterdir", "glob", "rglob"}
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 60


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ("lowrank_lab", *path.relative_to(PACKAGE).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return HOMES.index(parts[1]) if len(parts) > 1 and parts[1] in HOMES else TOP


def imports(path: Path, known: set[str]) -> set[str]:
    """Every lowrank_lab module that `path` imports, at module level or inside a function, by an
    import statement or by importlib.import_module("lowrank_lab…")."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names = [node.args[0].value]
        else:
            continue
        out |= {n for n in names if n in known and n.startswith("lowrank_lab")}
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) - {name} for name, path in found.items()}


def test_no_relative_imports_so_the_graph_is_complete():
    relative = [f"{p.relative_to(PACKAGE)}:{n.lineno}" for p in modules().values()
                for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ImportFrom) and n.level]
    assert not relative, f"relative imports hide edges from this test: {relative}"


def test_imports_point_down_the_homes():
    up = [f"{m} → {d}" for m, deps in graph().items() for d in deps
          if layer(d) > layer(m) and not (layer(m) == TOP and d == "lowrank_lab")]
    assert not up, "imports up the layers:\n" + "\n".join(sorted(up))


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    cycles = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                cycles.append(" → ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d, stack + [d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def string_literals(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):  # f"{name}.json": the constant tail is the file name
            tail = node.values[-1] if node.values else None
            if isinstance(tail, ast.Constant) and isinstance(tail.value, str):
                yield node.lineno, "x" + tail.value


def test_only_store_names_a_file():
    named = [f"{path.relative_to(PACKAGE)}:{line} {text!r}" for name, path in modules().items()
             if layer(name) != HOMES.index("store") for line, text in string_literals(path)
             if FILE_NAME.match(text.strip())]
    assert not named, "file names outside store/:\n" + "\n".join(named)


@pytest.mark.parametrize("home", ["analysis", "present"])
def test_analysis_and_present_open_no_file(home):
    calls = []
    for path in sorted((PACKAGE / home).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if name in FILE_CALLS:
                    calls.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}()")
    assert not calls, f"{home}/ touches files (store/ does that):\n" + "\n".join(calls)


def test_present_never_reaches_torch():
    g = graph()
    reach, todo = set(), [m for m in g if layer(m) == HOMES.index("present")]
    while todo:
        m = todo.pop()
        if m not in reach:
            reach.add(m)
            todo.extend(g[m])
    heavy = sorted(m for m in reach if "torch" in {n.split(".")[0] for n in third_party(modules()[m])})
    assert not heavy, f"present/ reaches torch through {heavy}"
    present = [m for m in g if layer(m) == HOMES.index("present")]
    code = "import sys\n" + "".join(f"import {m}\n" for m in present) + "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing present/ loaded torch"


def third_party(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_modules_and_functions_are_small():
    long = []
    for path in modules().values():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}() {n} lines")
    assert not long, "too long:\n" + "\n".join(long)


def script_imports(home: str) -> dict[str, set[str]]:
    """{file: the lowrank_lab modules it imports} for every Python file under cli/, figures/ or
    benchmarks/."""
    known = set(modules())
    return {str(p.relative_to(ROOT)): imports(p, known) for p in sorted(SCRIPTS[home].rglob("*.py"))}


def test_importlib_imports_are_seen(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('import importlib\nimportlib.import_module("lowrank_lab.store.models")\n')
    assert imports(probe, set(modules())) == {"lowrank_lab.store.models"}


def test_cli_calls_only_workflow_api_and_spec():
    allowed = ("lowrank_lab.workflow", "lowrank_lab.api", "lowrank_lab.spec", "lowrank_lab.errors")
    found = script_imports("cli")
    assert found, "no cli module scanned"
    bad = [f"{f} → {m}" for f, deps in found.items() for m in deps if not m.startswith(allowed)]
    assert not bad, "cli/ reaches past workflow:\n" + "\n".join(bad)


def test_figure_scripts_only_read():
    allowed = ("lowrank_lab.store", "lowrank_lab.present", "lowrank_lab.workflow", "lowrank_lab.spec")
    bad = [f"{f} → {m}" for f, deps in script_imports("figures").items() for m in deps if not m.startswith(allowed)]
    assert not bad, "figures/ computes instead of reading:\n" + "\n".join(bad)


def test_no_package_module_imports_the_scripts():
    tops = {"lowrank_lab_cli", "cli", "figures", "benchmarks"}
    bad = [f"{m} → {n}" for m, path in modules().items() for n in third_party(path)
           if n.split(".")[0] in tops and m != "lowrank_lab.__main__"]  # `python -m lowrank_lab` is the CLI
    assert not bad, "the package imports its scripts:\n" + "\n".join(bad)
    assert all(script_imports(home) is not None for home in SCRIPTS)  # every script parses


def test_analysis_loads_no_model_and_reads_no_adapter():
    forbidden = ("lowrank_lab.store.models", "lowrank_lab.store.adapters", "lowrank_lab.store.base_weights",
                 "lowrank_lab.store.peft_format", "lowrank_lab.store.tensors", "lowrank_lab.store.runs.load_run",
                 "lowrank_lab.store.runs.load_sweep")
    bad = [f"{m} → {d}" for m, deps in graph().items() if layer(m) == HOMES.index("analysis")
           for d in deps if d.startswith(forbidden)]
    assert not bad, "analysis/ loads models or reads adapters (store and workflow do that):\n" + "\n".join(bad)
