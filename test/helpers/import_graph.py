"""The static import graph of a package (every ``import`` statement anywhere in a module,
function-level ones included), read with ``ast``; and which modules touch ROS."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

# Top-level names of ROS 2 Python packages (plus any *_msgs / *_srvs interface package).
ROS_TOP = ("rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "rosbag2_py", "message_filters",
           "launch", "launch_ros", "ament_index_python", "tf2_ros", "cv_bridge", "rosgraph_msgs")


def is_ros(name: str, package: str = "vggts_ros") -> bool:
    top = name.split(".")[0]
    return (top in ROS_TOP or top.startswith("rosidl") or top.endswith(("_msgs", "_srvs"))
            or name.startswith((f"{package}.msg", f"{package}.srv")))


def modules(root: Path, package: str) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of ``root/package``."""
    out = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_names(path: Path, module: str) -> List[str]:
    """Every name an import statement of the file reaches (``from a import b`` gives ``a``
    and ``a.b``; relative imports resolved against ``module``)."""
    is_package = path.name == "__init__.py"
    base = module if is_package else module.rpartition(".")[0]
    names: List[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base
                for _ in range(node.level - 1):
                    anchor = anchor.rpartition(".")[0]
                source = f"{anchor}.{node.module}" if node.module else anchor
            else:
                source = node.module or ""
            names.append(source)
            names += [f"{source}.{alias.name}" for alias in node.names]
    return names


def graph(root: Path, package: str) -> Dict[str, Set[str]]:
    """module -> the package's modules it imports (a name resolves to the longest module
    that exists: ``from vggts_ros.config import X`` is an edge to ``vggts_ros.config``)."""
    mods = modules(root, package)

    def resolve(name: str):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    out: Dict[str, Set[str]] = {}
    for module, path in mods.items():
        targets = {resolve(n) for n in imported_names(path, module) if n == package or n.startswith(package + ".")}
        out[module] = {t for t in targets if t and t != module}
    return out


def cycles(edges: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (each is an import circle)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan; the package is small enough for recursion
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found
