"""The type stubs cover the native module: every public name it has is declared in
`_qnumeric.pyi`, with its methods, and nothing is declared that it does not have."""

import ast
import inspect
import os

import qnumeric
from qnumeric import _qnumeric


def stub():
    path = os.path.join(os.path.dirname(qnumeric.__file__), "_qnumeric.pyi")
    with open(path) as f:
        return ast.parse(f.read())


def test_every_public_name_is_in_the_stubs():
    tree = stub()
    declared = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            declared[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared[node.target.id] = node
    public = {n for n in dir(_qnumeric) if not n.startswith("_")} | {"__version__"}
    assert public - set(declared) == set()
    for name in declared:
        if not name.startswith("_") and name not in ("FloatArray", "IntArray"):
            assert hasattr(_qnumeric, name), name
    for name, node in declared.items():
        obj = getattr(_qnumeric, name, None)
        if isinstance(node, ast.ClassDef) and inspect.isclass(obj) and not issubclass(obj, BaseException):
            methods = {m for m in dir(obj) if not m.startswith("_")}
            stubbed = {b.name for b in node.body if isinstance(b, ast.FunctionDef)}
            inherited = {b.name for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "_Observer" for b in n.body if isinstance(b, ast.FunctionDef)}
            assert methods - stubbed - inherited == set(), (name, methods - stubbed - inherited)


def test_everything_has_a_docstring():
    for name in dir(_qnumeric):
        if name.startswith("_"):
            continue
        obj = getattr(_qnumeric, name)
        if callable(obj):
            assert (obj.__doc__ or "").strip(), name
