"The package's shape: no import circle between its modules (lazy imports inside functions included), no module over 500 lines."
import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / 'spectral_nb'
GENERATED = {'_modidx'}  # nbdev's symbol index, written by nbdev_export, not code anyone reads
MAX_LINES = 500


def modules() -> dict:
    "{module name: source} of the package's own modules."
    return {p.stem: p.read_text() for p in sorted(PKG.glob('*.py')) if p.stem not in GENERATED | {'__init__'}}


def imports_of(src: str, known) -> set:
    "The package modules a module's source imports anywhere (top level or inside a function), relatively or absolutely."
    out = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ''
            if node.level:  # from .x import y / from . import x
                names = [mod] if mod else [a.name for a in node.names]
            elif mod == 'spectral_nb':
                names = [a.name for a in node.names]
            elif mod.startswith('spectral_nb.'):
                names = [mod.split('.')[1]]
            else:
                names = []
            out |= {n.split('.')[0] for n in names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split('.')[1] for a in node.names if a.name.startswith('spectral_nb.')}
    return out & set(known)


def import_graph(mods: dict) -> dict:
    return {m: imports_of(src, mods) - {m} for m, src in mods.items()}


def find_cycle(graph: dict):
    "One import circle as a list of modules [a, b, ..., a], or None."
    state, stack = {}, []

    def visit(m):
        state[m] = 'open'
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 'open':
                return stack[stack.index(n) :] + [n]
            if n not in state and (c := visit(n)):
                return c
        state[m] = 'done'
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_cycle_finder_finds_a_constructed_circle():
    assert find_cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == ['a', 'b', 'c', 'a']
    assert find_cycle({'a': {'b'}, 'b': set(), 'c': {'a', 'b'}}) is None
    src = "from .b import x\ndef f():\n    from spectral_nb.c import y\n    import spectral_nb.d\n"
    assert imports_of(src, {'b', 'c', 'd', 'e'}) == {'b', 'c', 'd'}


def test_package_import_graph_has_no_circle():
    graph = import_graph(modules())
    assert {'dataset', 'inputs', 'fit', 'streaming', 'bundle', 'predict', 'metrics'} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def test_streaming_feeds_the_fitter_and_owns_no_task():
    "streaming sits below fit: fit imports it, it imports neither fit nor anything above it."
    graph = import_graph(modules())
    assert 'streaming' in graph['fit']
    assert not graph['streaming'] & {'fit', 'bundle', 'predict', 'metrics', 'evaluate', 'cnn', 'mixed', 'redshift'}


@pytest.mark.parametrize('name', sorted(modules()))
def test_module_is_at_most_500_lines(name):
    n = len((PKG / f'{name}.py').read_text().splitlines())
    assert n <= MAX_LINES, f"spectral_nb/{name}.py has {n} lines; split its notebook by concept (limit {MAX_LINES})"
