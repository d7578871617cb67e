"""The package's layers only point down: a module imports only from layers below its own (or from its own
package), never up and never sideways into a peer. Checked on the source, every import (lazy ones included)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gpt2lab"

# lowest first; parts on one line are peers: none imports another
LAYERS = [
    ["errors"],
    ["files", "progress", "formats"],
    ["model"],
    ["runtime", "recipes"],
    ["config"],
    ["tokenizer"],
    ["data"],
    ["metrics", "checkpoint"],
    ["training", "eval", "interop", "report"],
    ["commands"],
    ["api"],
    ["cli"],
    ["__main__"],
]
RANK = {part: i for i, parts in enumerate(LAYERS) for part in parts}


def part_of(module: str) -> str:
    """gpt2lab.training.optim.muon -> train; gpt2lab.cli -> cli; gpt2lab (the package itself) -> errors' layer."""
    pieces = module.split(".")
    if len(pieces) < 2 or not ((PACKAGE / pieces[1]).is_dir() or (PACKAGE / f"{pieces[1]}.py").is_file()):
        return "errors"  # gpt2lab itself, or a name defined in its __init__ (__version__): the bottom layer
    return pieces[1]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every gpt2lab import in a file."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found += [(node.lineno, t) for t in names if t.startswith("gpt2lab")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("gpt2lab")]
    return found


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if not p.name.startswith("_") or p.name == "__main__.py"}
    parts -= {"__pycache__"}
    assert parts - {"__init__"} <= set(RANK), f"parts without a layer: {sorted(parts - set(RANK))}"


def test_imports_only_point_down():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        here = part_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, target in imports(path):
            there = part_of(target)
            if there == here or target == "gpt2lab":
                continue
            if path == PACKAGE / "__init__.py" and target == "gpt2lab.api":
                continue  # the front door: `gpt2lab.train(...)` loads the API on first use (module __getattr__)
            if RANK[there] >= RANK[here]:
                kind = "sideways" if RANK[there] == RANK[here] else "up"
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target} ({kind}: {here} -> {there})")
    assert not wrong, "\n".join(wrong)


def test_a_planted_upward_import_is_caught(tmp_path, monkeypatch):
    """The checker itself: an import from the trainer inside the model package is reported."""
    fake = tmp_path / "gpt2lab" / "model"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from ..training.trainer import Trainer\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert imports(fake / "bad.py") == [(1, "gpt2lab.training.trainer")]
    assert RANK[part_of("gpt2lab.training.trainer")] > RANK[part_of("gpt2lab.model.bad")]


@pytest.mark.parametrize("command,forbidden", [
    ("sample", ("gpt2lab.training", "gpt2lab.metrics", "gpt2lab.eval", "gpt2lab.report")),
    ("eval", ("gpt2lab.training", "gpt2lab.report")),
])
@pytest.mark.slow
def test_commands_load_only_what_they_use(command, forbidden):
    """`gpt2lab sample` (and eval) with a bad path stops after imports: which gpt2lab modules got loaded?"""
    code = ("import sys; from gpt2lab.cli import main; main([%r, '/nonexistent', '--device', 'cpu', '--data', '/x'] "
            "if %r == 'eval' else [%r, '/nonexistent', '--device', 'cpu']); "
            "print(' '.join(m for m in sys.modules if m.startswith('gpt2lab')))") % (command, command, command)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    loaded = out.stdout.split()
    assert loaded, out.stderr
    assert not [m for m in loaded if m.startswith(forbidden)], loaded


def module_of(name: str) -> str | None:
    """The gpt2lab module a dotted import target names (a name imported from a module resolves to the module)."""
    parts = name.split(".")
    while parts:
        path = ROOT.joinpath(*parts)
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            return ".".join(parts)
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        edges = {module_of(t) for _, t in imports(path)} - {None, module}
        if path == PACKAGE / "__init__.py":
            edges.discard("gpt2lab.api")  # the front door's lazy re-export (see above)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_cycle():
    """Inside a package too (the layer test sees only packages): two modules that import each other, even only
    for type annotations, are one module in two files."""
    assert cycles(import_graph()) == []


def test_a_planted_cycle_is_caught():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_planted_bug_of_the_mutation_check_still_applies():
    """tests/mutation.py plants each bug by replacing a piece of source that must occur exactly once: a refactor
    that moves or rewrites that piece must update the mutant, or the check would silently test nothing."""
    from tests.mutation import MUTANTS

    stale = [f"{m.name} ({m.file}: found {(ROOT / m.file).read_text().count(m.before)} times)" for m in MUTANTS
             if not (ROOT / m.file).is_file() or (ROOT / m.file).read_text().count(m.before) != 1]
    missing = [f"{m.name}: {t}" for m in MUTANTS for t in m.tests if not (ROOT / "tests" / t.split("::")[0]).is_file()]
    assert not stale and not missing, stale + missing
