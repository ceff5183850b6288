"""Which Kubernetes API permissions a worker's code needs, derived from the code itself.

For a worker's entry module, follow its imports (module level and inside functions) through our own
packages, find every reference to a method of the official `kubernetes` client's API classes, and
turn each into an RBAC permission (API group, resource[/subresource], verb) from the HTTP method and
path that the client method uses. `watch.Watch().stream(api.list_x, ...)` is a watch. For
`CustomObjectsApi` the group and plural come from the call's arguments (constants of the module).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from functools import cache
from pathlib import Path

import kubernetes.client as k8s

Permission = tuple[str, str, str]  # (api group, resource or resource/subresource, verb)

OUR_PACKAGES = ("schemas", "producers", "workers", "serving", "training")
_SERIALIZE = re.compile(r"def _(\w+)_serialize\(.*?method='(\w+)',\s*resource_path='([^']+)'", re.DOTALL)


@cache
def api_endpoints() -> dict[str, set[tuple[str, str]]]:
    """Client method name -> the (HTTP method, path template) it calls, over every API module.

    Each generated `_<method>_serialize` function of `kubernetes/client/api/*.py` names both.
    """
    endpoints: dict[str, set[tuple[str, str]]] = {}
    for path in sorted((Path(k8s.__file__).parent / "api").glob("*_api.py")):
        for name, http_method, template in _SERIALIZE.findall(path.read_text()):
            for variant in (name, f"{name}_with_http_info", f"{name}_without_preload_content"):
                endpoints.setdefault(variant, set()).add((http_method, template))
    return endpoints


def permission(http_method: str, path: str, *, group: str | None = None, plural: str | None = None,
               watch: bool = False) -> Permission:
    """The RBAC permission one request needs, e.g. ('batch', 'jobs', 'create')."""
    parts = [p for p in path.split("/") if p]
    if parts[0] == "api":
        api_group, rest = "", parts[2:]
    else:
        api_group, rest = parts[1], parts[3:]
    if api_group == "{group}":
        assert group is not None, f"no group for {path}"
        api_group = group
    if rest[:2] == ["namespaces", "{namespace}"]:
        rest = rest[2:]
    resource = plural if rest[0] == "{plural}" else rest[0]
    assert resource is not None, f"no plural for {path}"
    named = len(rest) > 1 and rest[1] == "{name}"
    if named and len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if watch:
        verb = "watch"
    else:
        verb = {
            "GET": "get" if named else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
            "DELETE": "delete" if named else "deletecollection",
        }[http_method]
    return api_group, resource, verb


@cache
def module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return None
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


Unit = tuple[str, str]  # (module, top-level name), or (module, "*") for the whole module


@cache
def _parse(module: str) -> ast.Module:
    path = module_file(module)
    assert path is not None, module
    return ast.parse(path.read_text())


def _definitions(module: str) -> dict[str, list[ast.stmt]]:
    """Top-level name -> the statements that define it (def, class, assignment)."""
    out: dict[str, list[ast.stmt]] = {}
    for stmt in _parse(module).body:
        names: list[str] = []
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names = [stmt.name]
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
        for name in names:
            out.setdefault(name, []).append(stmt)
    return out


def _import_units(node: ast.Import | ast.ImportFrom, module: str) -> dict[str, Unit]:
    """Bound name -> what it refers to, for one import statement (only our packages)."""
    bound: dict[str, Unit] = {}
    if isinstance(node, ast.Import):
        for alias in node.names:
            bound[(alias.asname or alias.name).split(".")[0]] = (alias.name, "*")
        return bound
    base = node.module or ""
    if node.level:
        base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
    for alias in node.names:
        target = f"{base}.{alias.name}"
        bound[alias.asname or alias.name] = (target, "*") if module_file(target) else (base, alias.name)
    return bound


def _ours(unit: Unit) -> bool:
    return unit[0].split(".")[0] in OUR_PACKAGES and module_file(unit[0]) is not None


def reachable(root: str) -> dict[str, list[ast.AST]]:
    """Per module, the syntax trees that code reachable from module `root` can run.

    Follows names, not just modules: `from workers.backends.kserve import mapped_errors` reaches that
    function (and what it uses), not every class of the module.
    """
    seen: set[Unit] = set()
    nodes: dict[str, list[ast.AST]] = {}
    todo: list[Unit] = [(root, "*")]
    while todo:
        unit = todo.pop()
        if unit in seen or not _ours(unit):
            continue
        seen.add(unit)
        module, name = unit
        parts = module.split(".")
        todo += [(".".join(parts[:i]), "*") for i in range(1, len(parts))]  # packages' __init__ run
        tree = _parse(module)
        module_imports: dict[str, Unit] = {}
        for stmt in tree.body:
            if isinstance(stmt, ast.Import | ast.ImportFrom):
                module_imports.update(_import_units(stmt, module))
        if name == "*":
            body: list[ast.AST] = list(tree.body)
        else:
            body = list(_definitions(module).get(name, []))
            if not body and name in module_imports:  # re-exported name
                todo.append(module_imports[name])
        nodes.setdefault(module, []).extend(body)
        definitions = _definitions(module)
        for node in body:
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import | ast.ImportFrom):
                    todo += list(_import_units(sub, module).values())
                elif isinstance(sub, ast.Name):
                    if sub.id in definitions:
                        todo.append((module, sub.id))
                    if sub.id in module_imports:
                        todo.append(module_imports[sub.id])
    return nodes


def _value(node: ast.expr | None, module: str) -> str | None:
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(importlib.import_module(module), node.id, None)
        return value if isinstance(value, str) else None
    return None


def _custom_args(args: list[ast.expr], keywords: list[ast.keyword], module: str) -> tuple[str | None, str | None]:
    kw = {k.arg: k.value for k in keywords if k.arg}
    group = _value(kw.get("group") or (args[0] if args else None), module)
    plural = _value(kw.get("plural") or (args[3] if len(args) > 3 else None), module)
    return group, plural


def kubernetes_calls(module: str, trees: list[ast.AST]) -> set[Permission]:
    """Every permission the Kubernetes client calls in `trees` (code of `module`) need."""
    endpoints = api_endpoints()
    watched: dict[int, ast.Call] = {}
    calls: dict[int, ast.Call] = {}
    nodes = [sub for tree in trees for sub in ast.walk(tree)]
    for node in nodes:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "stream" and node.args and isinstance(node.args[0], ast.Attribute):
                watched[id(node.args[0])] = node
            calls[id(node.func)] = node
    found: set[Permission] = set()
    for node in nodes:
        if not (isinstance(node, ast.Attribute) and node.attr in endpoints):
            continue
        if id(node) in watched:
            stream_call = watched[id(node)]
            args, keywords, watch = stream_call.args[1:], stream_call.keywords, True
        elif id(node) in calls:
            args, keywords, watch = calls[id(node)].args, calls[id(node)].keywords, False
        else:
            args, keywords, watch = [], [], False  # a method passed around: count what it would do
        group, plural = _custom_args(args, keywords, module)
        for http_method, template in endpoints[node.attr]:
            found.add(permission(http_method, template, group=group, plural=plural, watch=watch))
    return found


def worker_permissions(root: str) -> dict[str, set[Permission]]:
    """Per module, the permissions that code reachable from `root` needs (modules with none left out)."""
    by_module = {m: kubernetes_calls(m, trees) for m, trees in sorted(reachable(root).items())}
    return {m: p for m, p in by_module.items() if p}


def role_permissions(role: dict) -> set[Permission]:
    """Expand a Role's rules into single permissions (wildcards are refused)."""
    granted: set[Permission] = set()
    for rule in role.get("rules", []):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), f"{role['metadata']['name']} grants {field} '*'"
        assert not rule.get("resourceNames"), "resourceNames would need the names known in advance"
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    granted.add((group, resource, verb))
    return granted
