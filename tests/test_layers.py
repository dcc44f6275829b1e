"""The layers hold: each module's imports, read with `ast` (nothing is imported), against
WORKSPACE.md's map.

- framework/ (the engine) imports neither augment/ nor trainers/; augment/ imports nothing from
  trainers/.
- No import cycle between the project's modules, counting module-level and function-level imports.
- A function-level import is there only to keep TensorFlow out of `--help` (or out of a module that
  must load before it), and says so on its line: `# lazy: keeps TF out of --help`. The imported
  module must then really bring TensorFlow or Keras in (through its own module-level imports).

Each failure names the module, the line and the import. `importlib.import_module` by name (the
registries' plug-in lookup) is not an import statement and is not counted.
"""

import ast
import os
import re

import pytest

# test_extending* write modules into the packages test_layers reads: one worker runs them in turn.
pytestmark = pytest.mark.xdist_group("package_files")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("framework", "augment", "trainers")
MARKER = "# lazy: keeps TF out of --help"
TENSORFLOW = ("tensorflow", "keras")
# package -> the packages it must not import
FORBIDDEN = {"framework": ("augment", "trainers"), "augment": ("trainers",)}


class Import:
    """One import statement's one target: `module` imports `target` at `line` (in a function or
    not)."""

    def __init__(self, module, target, line, in_function, marked, text):
        self.module, self.target, self.line = module, target, line
        self.in_function, self.marked, self.text = in_function, marked, text

    def __repr__(self):
        return f"{self.module}:{self.line}: {self.text}"


def project_modules(root: str = ROOT, packages=PACKAGES) -> dict:
    """{dotted module name: file path} of every .py file in `packages` under `root`."""
    modules = {}
    for package in packages:
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    dotted = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    modules[dotted.removesuffix(".__init__")] = path
    return modules


def read_imports(modules: dict) -> list:
    """Every import of every module, each target resolved to a project module where it is one
    (`from framework import config` -> framework.config), else to the name imported."""
    found = []
    for module, path in sorted(modules.items()):
        with open(path) as f:
            source = f.read()
        lines = source.splitlines()
        tree = ast.parse(source, path)
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        for node, in_function in _import_nodes(tree):
            text = " ".join(line.strip() for line in lines[node.lineno - 1 : node.end_lineno])
            marked = MARKER in text
            for target in _targets(node, package, modules):
                found.append(Import(module, target, node.lineno, in_function, marked, text))
    return found


def _import_nodes(tree):
    """(import node, inside a function?) for every import statement of the tree."""
    stack = [(tree, False)]
    while stack:
        node, in_function = stack.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            stack.append((child, inner))


def _targets(node, package: str, modules: dict) -> list:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from . import x, from .y import z
        parts = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join([*parts, *([base] if base else [])])
    return [
        f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
        for alias in node.names
    ]


def layer_violations(imports) -> list:
    """The imports that point up: framework -> augment or trainers, augment -> trainers."""
    return [
        imp
        for imp in imports
        if any(
            imp.target.split(".")[0] == above
            for above in FORBIDDEN.get(imp.module.split(".")[0], ())
        )
    ]


def import_cycles(imports, modules: dict) -> list:
    """Each cycle between project modules (a strongly connected component of the import graph, or
    a module that imports itself) as the list of the imports that close it."""
    edges = {}
    for imp in imports:
        if imp.target in modules:
            edges.setdefault(imp.module, {}).setdefault(imp.target, imp)
    cycles = []
    for component in _strongly_connected(modules, edges):
        if len(component) > 1 or component[0] in edges.get(component[0], {}):
            members = set(component)
            cycles.append(
                [
                    edges[a][b]
                    for a in sorted(members)
                    for b in sorted(edges.get(a, {}))
                    if b in members
                ]
            )
    return cycles


def _strongly_connected(nodes, edges) -> list:
    """Tarjan's algorithm, iterative: the strongly connected components of the graph."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    for start in sorted(nodes):
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, {}))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, {})))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def brings_tensorflow(target: str, imports, modules: dict) -> bool:
    """Whether importing `target` imports TensorFlow or Keras (through module-level imports)."""
    top_level = {}
    for imp in imports:
        if not imp.in_function:
            top_level.setdefault(imp.module, set()).add(imp.target)
    seen, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name.split(".")[0] in TENSORFLOW:
            return True
        if name in modules and name not in seen:
            seen.add(name)
            todo.extend(top_level.get(name, ()))
    return False


def lazy_import_violations(imports, modules: dict) -> list:
    """(import, why) for each function-level import without the marker, or whose marker is not
    true."""
    bad = []
    for imp in imports:
        if not imp.in_function:
            continue
        if not imp.marked:
            bad.append((imp, f"a function-level import without {MARKER!r}"))
        elif not brings_tensorflow(imp.target, imports, modules):
            bad.append((imp, f"{imp.target} does not import TensorFlow: import it at the top"))
    return bad


def _report(lines) -> str:
    """One line each, by module and line number, once each (an import of several names is one)."""
    key = lambda line: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", line)]  # noqa: E731
    return "\n".join(sorted({str(line) for line in lines}, key=key))


# ---------------------------------------------------------------- this project


def test_framework_imports_neither_augment_nor_trainers_and_augment_no_trainers():
    modules = project_modules()
    bad = layer_violations(read_imports(modules))
    assert not bad, "imports against the layers (engine < augment < trainers):\n" + _report(bad)


def test_no_import_cycle_between_modules():
    modules = project_modules()
    cycles = import_cycles(read_imports(modules), modules)
    assert not cycles, "import cycles (each: the imports that close it):\n" + "\n".join(
        _report(cycle) + "\n" for cycle in cycles
    )


def test_function_level_imports_only_keep_tensorflow_out_and_say_so():
    modules = project_modules()
    bad = lazy_import_violations(read_imports(modules), modules)
    assert not bad, "function-level imports:\n" + _report(f"{imp}  <- {why}" for imp, why in bad)


def test_the_reader_sees_this_projects_imports():
    modules = project_modules()
    imports = read_imports(modules)
    assert {"framework.config", "trainers.cli", "augment.ops"} <= set(modules)
    assert any(i.module == "trainers.cli" and i.target == "trainers.recipes" for i in imports)
    assert any(
        i.module == "framework.data_service" and i.target == "framework.config" for i in imports
    )
    assert brings_tensorflow("trainers.triplet_train", imports, modules)
    assert not brings_tensorflow("trainers.recipes", imports, modules)


# ---------------------------------------------------------------- the checks themselves


def test_each_check_names_the_module_and_the_import(tmp_path):
    files = {
        "framework/__init__.py": "",
        "framework/engine.py": "import tensorflow as tf\nfrom augment import ops\n",
        "framework/config.py": (
            "def check():\n"
            "    from framework import engine  # lazy: keeps TF out of --help\n"
            "    from framework import plain  # lazy: keeps TF out of --help\n"
            "    import json\n"
        ),
        "framework/plain.py": "import os\n",
        "augment/__init__.py": "",
        "augment/ops.py": "from trainers.cli import main\n",
        "trainers/__init__.py": "",
        "trainers/cli.py": "from . import recipes\n\ndef main():\n    pass\n",
        "trainers/recipes.py": (
            "def get():\n    from trainers import cli  # lazy: keeps TF out of --help\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = project_modules(str(tmp_path))
    imports = read_imports(modules)
    assert {(i.module, i.target, i.line) for i in layer_violations(imports)} == {
        ("framework.engine", "augment.ops", 2),
        ("augment.ops", "trainers.cli", 1),
    }
    cycles = import_cycles(imports, modules)
    assert [[(i.module, i.target) for i in cycle] for cycle in cycles] == [
        [("trainers.cli", "trainers.recipes"), ("trainers.recipes", "trainers.cli")]
    ]
    lazy = {
        (i.module, i.target, why.split(" ")[0])
        for i, why in lazy_import_violations(imports, modules)
    }
    assert lazy == {
        ("framework.config", "json", "a"),  # no marker
        ("framework.config", "framework.plain", "framework.plain"),  # marked, but no TensorFlow
        ("trainers.recipes", "trainers.cli", "trainers.cli"),
    }
