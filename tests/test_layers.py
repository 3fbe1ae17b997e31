"""The package's import graph (issue 18): no circle, each module importing only from its own layer or below (the
layers drawn in README.md's layout section), modules of about 400 lines at most. Read with `ast`, nothing imported."""
import ast, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'ssl_workbench'
MAX_LINES = 420          # "about 400"; `_modidx.py` (nbdev's generated index) is not a module anyone reads

# From the ground up; a module imports only from its own layer or lower ones. `methods.*`: every method module.
LAYERS = [
    ('core', 'folders', 'stream', 'data', 'augment'),
    ('comm',),
    ('blocks', 'backbones', 'metrics', 'linear'),
    ('distill',),
    ('guard', 'rundir', 'evaluate', 'report', 'runfiles'),
    ('train', 'distributed', 'methods.*'),
    ('cli', 'bench', 'bench_peer', 'dashboard', 'viz', 'repro', '__main__'),
]
# the methods stand beside the trainer and use only the shared modules below it (and each other: presets, bases)
METHODS_MAY_IMPORT = {'core', 'augment', 'comm', 'blocks', 'backbones', 'metrics', 'distill'}

def module_name(path: Path) -> str:
    return '.'.join(path.relative_to(PKG).with_suffix('').parts)

def modules() -> dict:
    "{module name relative to the package ('train', 'methods.dino'): path}, generated `_modidx` and `__init__`s left out."
    return {module_name(p): p for p in sorted(PKG.rglob('*.py')) if p.name not in ('_modidx.py', '__init__.py')}

def imports_of(path: Path, known) -> set:
    "The package modules that `path` imports anywhere in it (module level or inside functions), relative names."
    name = module_name(path).split('.')
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import): targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ['ssl_workbench'] + name[:-1][:len(name) - node.level] if node.level <= len(name) else []
                mod = '.'.join(base + ([node.module] if node.module else []))
            else: mod = node.module or ''
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]   # `from pkg import module`
        else: continue
        for t in targets:
            if t.startswith('ssl_workbench.') and t[len('ssl_workbench.'):] in known: out.add(t[len('ssl_workbench.'):])
    return out - {module_name(path)}

def graph() -> dict:
    mods = modules()
    return {m: imports_of(p, mods) for m, p in mods.items()}

def find_cycle(g: dict):
    "One import circle of graph `g` ({node: nodes it imports}) as a list [a, b, ..., a], or None."
    state, stack = {}, []
    def visit(n):
        state[n] = 'open'; stack.append(n)
        for m in sorted(g.get(n, ())):
            if state.get(m) == 'open': return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)): return c
        state[n] = 'done'; stack.pop()
        return None
    for n in sorted(g):
        if n not in state and (c := visit(n)): return c
    return None

def layer_of(mod: str) -> int:
    for i, names in enumerate(LAYERS):
        if mod in names or (mod.startswith('methods.') and 'methods.*' in names): return i
    raise AssertionError(f"module {mod} is in no layer: add it to LAYERS here and to README.md's drawing")

def test_cycle_finder_finds_a_circle_and_only_a_circle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'a'}}) == ['a', 'a']
    assert find_cycle({'a': {'b', 'c'}, 'b': {'c'}, 'c': set()}) is None

def test_imports_are_read_at_every_level(tmp_path):
    "Function-level and relative imports count (a circle hidden inside a function is still a circle)."
    mods = dict.fromkeys(['train', 'core', 'methods.dino', 'blocks', 'bench'])
    f = tmp_path / 'x.py'
    f.write_text("import os\nfrom .core import a\ndef f():\n    from ssl_workbench.train import train\n    from ssl_workbench import bench\n")
    global PKG
    old, PKG = PKG, tmp_path
    try: assert imports_of(f, mods) == {'core', 'train', 'bench'}
    finally: PKG = old
    f2 = PKG / 'methods' / 'dino.py'
    assert 'blocks' in imports_of(f2, modules()) and 'core' in imports_of(f2, modules())

def test_no_import_circle():
    assert (c := find_cycle(graph())) is None, f"import circle: {' -> '.join(c)}"

def test_every_module_imports_only_from_its_layer_or_below():
    bad = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
           for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not bad, '\n'.join(bad)

def test_methods_import_only_shared_modules():
    bad = [f"{m} imports {d}" for m, deps in graph().items() if m.startswith('methods.')
           for d in deps if d not in METHODS_MAY_IMPORT and not d.startswith('methods.')]
    assert not bad, '\n'.join(bad)

def readme_layers():
    "The layer drawing of README.md's layout section: [(layer number, module names)], top first."
    text = (ROOT / 'README.md').read_text()
    block = re.search(r"\nLayers, from the ground up.*?```text\n(.*?)```", text, re.S)
    assert block, "README.md has no ```text block of layers after 'Layers, from the ground up'"
    rows = [re.match(r"\s*(\d+)\s+(.+?)(?:\s{2,}.*)?$", l) for l in block[1].splitlines()]
    return [(int(r[1]), tuple(x.strip() for x in r[2].split('·'))) for r in rows if r]

def test_readme_draws_these_layers():
    drawn = dict(readme_layers())
    assert drawn == {i: tuple(n for n in names if n != '__main__') for i, names in enumerate(LAYERS)}, drawn

def test_every_module_is_in_a_layer():
    for m in modules(): layer_of(m)

def test_module_sizes():
    big = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not big, f"modules over {MAX_LINES} lines (split them by purpose): {big}"
