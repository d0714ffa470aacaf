"""The import graph of `evalign_jax` and `data_pipelines`: no circle, and every import points down.

Imports are read from the source with `ast` (every `import` and `from ... import`, at module
level or inside a function), so a lazy import counts as much as any other. The layers, bottom up;
an import must go to a lower layer or stay inside its own group (groups of one layer sit side by
side and import nothing of each other):

  0  evalign_jax (the package), files
  1  events (the event core) | infrastructure (runtime, config_utils, distributed, sharding,
     guards, checkpoints, metric_writers)
  2  models | data_pipelines
  3  evaluators | export
  4  trainers | evaluate (the eval stage) | predict | demos
  5  quickstart | tools (command-line tools over exports and stages)
  6  stages, main
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("evalign_jax", "data_pipelines")

# (group, module prefixes) per layer, bottom up; a module belongs to its longest prefix.
LAYERS = [
    [("package", ["evalign_jax", "evalign_jax.files"])],
    [("events", ["evalign_jax.events"]),
     ("infrastructure", ["evalign_jax.runtime", "evalign_jax.config_utils",
                         "evalign_jax.distributed", "evalign_jax.sharding", "evalign_jax.guards",
                         "evalign_jax.checkpoints", "evalign_jax.metric_writers"])],
    [("models", ["evalign_jax.models"]), ("data", ["data_pipelines"])],
    [("evaluators", ["evalign_jax.evaluators"]), ("export", ["evalign_jax.export"])],
    [("trainers", ["evalign_jax.trainers"]), ("evaluate", ["evalign_jax.evaluate"]),
     ("predict", ["evalign_jax.predict"]), ("demos", ["evalign_jax.demos"])],
    [("quickstart", ["evalign_jax.quickstart"]), ("tools", ["evalign_jax.tools"])],
    [("entry", ["evalign_jax.stages", "evalign_jax.main"])],
]


def project_modules(root=REPO) -> dict[str, str]:
  """{dotted module name: path} of every .py file of the packages (packages by __init__)."""
  out = {}
  for package in PACKAGES:
    for folder, dirs, names in os.walk(os.path.join(root, package)):
      dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
      for name in names:
        if name.endswith(".py"):
          rel = os.path.relpath(os.path.join(folder, name), root)[:-3].split(os.sep)
          out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = os.path.join(folder, name)
  return out


def imports_of(name: str, path: str, modules) -> set[str]:
  """The project modules `name` (at `path`) imports, anywhere in its source."""
  is_package = path.endswith("__init__.py")
  out = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    targets = []
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:   # relative: from the module's package, `level` packages up
        parts = name.split(".")[:len(name.split(".")) - node.level + is_package]
        base = ".".join(parts + ([base] if base else []))
      # `from a import b` is the module a.b when there is one, else a name in a.
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    for target in targets:
      while target and target not in modules:   # a name inside a module: the module
        target = target.rpartition(".")[0]
      if target and target != name:
        out.add(target)
  return out


def import_graph(root=REPO) -> dict[str, set[str]]:
  modules = project_modules(root)
  return {name: imports_of(name, path, modules) for name, path in modules.items()}


def layer_of(module: str) -> tuple[int, str] | None:
  """(layer, group) of a module: that of its longest listed prefix."""
  best = None
  for i, groups in enumerate(LAYERS):
    for group, prefixes in groups:
      for p in prefixes:
        if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[0]):
          best = (len(p), (i, group))
  return best and best[1]


def upward_imports(graph) -> list[str]:
  """"a -> b" for every import that does not point to a lower layer or the same group."""
  bad = []
  for a, targets in graph.items():
    for b in sorted(targets):
      (la, ga), (lb, gb) = layer_of(a), layer_of(b)
      if not (lb < la or (la, ga) == (lb, gb)):
        bad.append(f"{a} ({ga}, layer {la}) -> {b} ({gb}, layer {lb})")
  return bad


def circles(graph) -> list[list[str]]:
  """The strongly connected components with more than one module (Tarjan's algorithm)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


@pytest.fixture(scope="module")
def graph():
  return import_graph()


def test_every_module_has_a_layer(graph):
  assert [m for m in graph if layer_of(m) is None] == []
  assert len(graph) > 60 and "evalign_jax.trainers.loop" in graph["evalign_jax.trainers.alignment"]


def test_no_import_circle(graph):
  assert circles(graph) == []


def test_every_import_points_down(graph):
  assert upward_imports(graph) == []


def test_nothing_outside_training_depends_on_the_trainers(graph):
  # Stated on its own because it is the rule most worth keeping: evaluation and prediction
  # run from an export without any training code. Only the two commands that run stages may:
  # the quick start, and add_pretrained (which rebuilds a stage to export one of its checkpoints).
  users = {a for a, targets in graph.items() for b in targets
           if b.startswith("evalign_jax.trainers") and not a.startswith("evalign_jax.trainers")}
  assert users == {"evalign_jax.quickstart", "evalign_jax.tools.add_pretrained"}


def test_the_checks_catch_a_circle_and_an_upward_import(tmp_path):
  # A fake tree: models imports the trainers lazily, inside a function (upward), the trainers
  # import models relatively (so a circle), and data_pipelines imports a name of the
  # evaluators (upward).
  for path, text in {
      "evalign_jax/__init__.py": "",
      "evalign_jax/models/__init__.py": "def f():\n  from evalign_jax.trainers import loop\n",
      "evalign_jax/trainers/__init__.py": "",
      "evalign_jax/trainers/loop.py": "from .. import models\n",
      "evalign_jax/evaluators/__init__.py": "",
      "data_pipelines/__init__.py": "from evalign_jax.evaluators import something\n",
  }.items():
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text(text)
  fake = import_graph(str(tmp_path))
  assert fake["evalign_jax.trainers.loop"] == {"evalign_jax.models"}
  assert circles(fake) == [["evalign_jax.models", "evalign_jax.trainers.loop"]]
  assert sorted(line.split(" ")[0] for line in upward_imports(fake)) == [
      "data_pipelines", "evalign_jax.models"]
