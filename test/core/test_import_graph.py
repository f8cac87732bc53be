"""The package's import graph has no circle, and the core imports nothing from ROS.

Read statically (``ast``), so an import inside a function counts as much as one at the top:
a lazy import only hides a circle until the function runs."""

from pathlib import Path

from helpers.import_graph import cycles, graph, imported_names, is_ros, modules

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "vggts_ros"

# Modules that are ROS front ends and may import rclpy and the interfaces.
ROS_FACING = {"vggts_ros.demo": "starts the node and plays cameras over DDS (vggts demo)"}
# (core module, ROS-facing module) edges allowed, with the reason.
ALLOWED_EDGES = {("vggts_ros.cli", "vggts_ros.demo"):
                 "the dispatcher registers `vggts demo`'s options; the demo imports rclpy only when it runs"}
# (module, ROS package) imports allowed in the core, with the reason.
ALLOWED = {("vggts_ros.bags", "ament_index_python"):
           "optional fallback inside try/except that finds msg/ in an installed ROS package"}


def ros_facing(module: str) -> bool:
    return module == f"{PACKAGE}.ros" or module.startswith(f"{PACKAGE}.ros.") or module in ROS_FACING


def test_no_import_circle():
    edges = graph(REPO, PACKAGE)
    assert len(edges) > 80 and "vggts_ros.config" in edges["vggts_ros.pipeline"]
    assert cycles(edges) == [], "import circle(s) among the package's modules"


def test_the_circle_check_finds_a_lazy_circle(tmp_path):
    """A circle closed only by function-level imports (as cli -> demo -> cli was) is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "cli.py").write_text("def main():\n    from pkg import demo\n")
    (pkg / "demo.py").write_text("from .sub import helpers\n")
    (pkg / "sub" / "helpers.py").write_text("def f():\n    from ..cli import main\n")
    (pkg / "other.py").write_text("import pkg.demo\n")
    edges = graph(tmp_path, "pkg")
    assert edges["pkg.demo"] == {"pkg.sub", "pkg.sub.helpers"} and edges["pkg.other"] == {"pkg.demo"}
    assert cycles(edges) == [["pkg.cli", "pkg.demo", "pkg.sub.helpers"]]


def test_core_modules_import_nothing_from_ros():
    mods = modules(REPO, PACKAGE)
    touches_ros = {m: sorted({n for n in imported_names(p, m) if is_ros(n, PACKAGE)}) for m, p in mods.items()}
    # the adapter really is where ROS is imported (the check sees it)
    assert any(n.split(".")[0] == "rclpy" for n in touches_ros["vggts_ros.ros.node"])
    offending = {}
    for module, names in touches_ros.items():
        if ros_facing(module):
            continue
        bad = [n for n in names if (module, n.split(".")[0]) not in ALLOWED]
        if bad:
            offending[module] = bad
    assert offending == {}, f"core modules importing ROS: {offending}"
    # a core module may use a module of vggts_ros.ros only if that one imports no ROS itself
    edges = graph(REPO, PACKAGE)
    leaks = {m: sorted(t for t in edges[m] if ros_facing(t) and (touches_ros[t] or t in ROS_FACING)
                       and (m, t) not in ALLOWED_EDGES)
             for m in edges if not ros_facing(m)}
    assert {m: t for m, t in leaks.items() if t} == {}, "core modules importing ROS-facing modules"
    assert "vggts_ros.ros.conversions" in edges["vggts_ros.replay"]  # ROS-free adapter code: allowed
