"""The documentation's commands and links: README.md and docs/*.md.

Every command in a shell code block (```bash, ```sh, ```shell, ```console: in a console block
the lines starting with ``$ ``) is either run here (``RUN``: cheap ones, executed as written in
a scratch directory, together with the README's Python example) or mapped in ``MAPPED`` to the
test that runs it; a command that is neither fails with its file:line. Beside that, every
command is checked against the code it names: ``vggts`` subcommands and options against the
real argument parser, ``bench/`` scripts and their options, launch arguments, parameter
names, service and message fields, repository paths. Inline commands in the text (``vggts
...``, ``python bench/...``) get the same option checks. Every relative link must point to an
existing file (and heading). Python snippets of docs/ (fragments) must parse and import names that exist.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md"] + sorted((REPO / "docs").glob("*.md"))
SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}

# Pages other engineers write (linked from the index and the README); a link to one of them
# may dangle until it lands. Remove an entry once its page is on main.
PENDING_PAGES: Dict[str, str] = {}


# ----------------------------------------------------------------------------- extraction
@dataclass(frozen=True)
class Command:
    page: Path
    line: int
    text: str  # one command, continuation lines joined, comment stripped, whitespace collapsed

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


_FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


def code_blocks(page: Path) -> Iterator[Tuple[str, int, List[str]]]:
    """(language, line number of the first body line, body lines) of every fenced block."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        yield lang, i + 2, lines[i + 1:j]
        i = j + 1


def strip_comment(line: str) -> str:
    """``line`` without a trailing shell comment (a ``#`` outside quotes after a blank)."""
    quote = None
    for k, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k].rstrip()
    return line.rstrip()


def commands(page: Path) -> List[Command]:
    found = []
    for lang, first, body in code_blocks(page):
        if lang not in SHELL_LANGS:
            continue
        pending, at = "", 0
        for n, raw in enumerate(body):
            line = raw.strip()
            if not pending:
                if lang == "console" and not line.startswith("$ "):
                    continue  # output
                at = first + n
            if line.startswith("$ "):
                line = line[2:]
            line = strip_comment(line)
            if not line and not pending:
                continue
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            found.append(Command(page, at, " ".join((pending + line).split())))
            pending = ""
    return found


def all_commands() -> List[Command]:
    return [c for page in PAGES for c in commands(page)]


def inline_spans(page: Path) -> List[Tuple[int, str]]:
    """(line, text) of every inline code span outside fenced blocks."""
    spans, inside = [], False
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            spans += [(n, s) for s in re.findall(r"`([^`\n]+)`", line)]
    # a span may be broken over two lines of a paragraph: join those too
    text = page.read_text(encoding="utf-8")
    for m in re.finditer(r"(?<!`)`([^`]*\n[^`]*)`(?!`)", text):
        joined = " ".join(m.group(1).split())
        if joined.startswith(("vggts ", "python bench/")):
            spans.append((text.count("\n", 0, m.start()) + 1, joined))
    return spans


# ----------------------------------------------------------------------------- what runs, what is mapped
# Commands this test runs, as written, in a scratch directory (after the README's Python
# example, in the order the pages show them).
RUN = (
    "vggts --help",
    "python -m vggts_ros.scene_files synthetic:0 scene/",
    "vggts segment --source scene/ego.png --source-mask scene/ego_object1.png --target scene/exo1.png "
    "--target scene/exo2.png --out out/segment",
)

THIS = "test/tools/test_docs.py"


@dataclass(frozen=True)
class Mapped:
    """Commands (``pattern``, a full match) run by other tests (``tests``: ``path::test``, or
    a file, e.g. CI's script, that must contain each of ``contains``)."""

    pattern: str
    tests: Tuple[str, ...]
    why: str
    contains: Tuple[str, ...] = ()


MAPPED = (
    # set-up and CI
    Mapped(r"bash run\.sh demo",
           ("test/tools/test_demo.py::test_demo_runs_the_graph_and_the_geometric_backend_finds_every_object", "run.sh"),
           "the test runs `python -m vggts_ros.cli demo`, which is what run.sh's demo job executes",
           ('demo) exec "$VENV/bin/python" -m vggts_ros.cli demo "$@"',)),
    Mapped(r"bash run\.sh test", (".ci/run",), "CI runs exactly this command", ("bash run.sh test",)),
    Mapped(r'bash run\.sh test -m "not ros"', (f"{THIS}::test_ros_marker_selects_the_ros_free_tests",),
           "the marker selection, checked on a collection"),
    # the PyPI-only install: what run.sh's set-up does (CI runs it on a fresh clone)
    Mapped(r"python3\.11 -m venv \.venv && \. \.venv/bin/activate", ("run.sh",), "run.sh creates the venv",
           ('"$PY" -m venv "$VENV"',)),
    Mapped(r"pip install -r requirements\.txt -r requirements-ros\.txt", ("run.sh",), "run.sh installs both lists",
           ('-r "$ROOT/requirements.txt" -r "$ROS_REQUIREMENTS"', 'ROS_REQUIREMENTS="$ROOT/requirements-ros.txt"')),
    Mapped(r"touch \.venv/COLCON_IGNORE", ("run.sh",), "run.sh marks the venv", ('touch "$VENV/COLCON_IGNORE"',)),
    Mapped(r"CMAKE_PREFIX_PATH=\$VIRTUAL_ENV AMENT_PREFIX_PATH=\$VIRTUAL_ENV cmake -S \. -B build/pip .*", ("run.sh",),
           "run.sh generates the interfaces with the same CMake call",
           ('cmake -S "$ROOT" -B "$build" -DVGGTS_INTERFACES_ONLY=ON', '-DCMAKE_INSTALL_PREFIX="$VENV"',
            '-DPython3_EXECUTABLE="$VENV/bin/python"')),
    Mapped(r"cmake --build build/pip && cmake --install build/pip", ("run.sh",), "run.sh builds and installs them",
           ('cmake --build "$build"', 'cmake --install "$build"')),
    Mapped(r"pip install --no-deps --no-build-isolation \.", ("run.sh",), "run.sh installs the package",
           ('--no-deps --no-build-isolation "$ROOT"',)),
    # a ROS workspace
    Mapped(r"cd ~/ros2_ws/src && git clone <this repository> vggts_ros",
           ("test/node/test_interfaces.py::test_colcon_workspace_build_installs_interfaces_and_python",),
           "the test copies the sources into <ws>/src/vggts_ros as a clone would"),
    Mapped(r"cd ~/ros2_ws && rosdep install --from-paths src --ignore-src -y",
           (f"{THIS}::test_package_xml_and_the_pip_line_cover_every_import",),
           "rosdep installs package.xml's keys; the test checks they cover what the code imports"),
    Mapped(r"python3 -m pip install .*", (f"{THIS}::test_package_xml_and_the_pip_line_cover_every_import",),
           "the pip line covers what rosdep does not"),
    Mapped(r"colcon build --packages-select vggts_ros && source install/setup\.bash",
           ("test/node/test_interfaces.py::test_colcon_workspace_build_installs_interfaces_and_python",),
           "colcon build in a scratch workspace, then the installed package and executable are used"),
    # the node
    Mapped(r"vggts_node --ros-args --params-file config/multicam\.yaml -p model\.backend:=geometric",
           ("test/node/test_launch_config.py::test_node_under_a_namespace_and_another_name_loads_the_shipped_yaml",),
           "the node process with the shipped YAML and -p model.backend:=geometric"),
    Mapped(r"(vggts_lifecycle_node|ros2 run vggts_ros vggts_lifecycle_node) --ros-args "
           r"--params-file config/multicam\.yaml( -p model\.backend:=geometric)?",
           ("test/node/test_node_tools.py::test_the_lifecycle_node_loads_on_configure_and_works_only_while_active",
            "test/node/test_lifecycle_semantics.py::test_parameters_cleanup_and_diagnostics_follow_the_lifecycle"),
           "the managed node over DDS (in the test's process)"),
    Mapped(r"ros2 lifecycle set /vggts (configure|activate)",
           ("test/node/test_node_tools.py::test_the_lifecycle_node_loads_on_configure_and_works_only_while_active",),
           "the transitions through lifecycle_msgs/srv/ChangeState, what `ros2 lifecycle set` calls"),
    Mapped(r"ros2 launch vggts_ros multicam\.launch\.py.*",
           ("test/node/test_launch_config.py::test_launch_file_starts_the_packaged_executable_with_a_params_file",
            "test/node/test_launch_config.py::test_launch_description_builds_where_launch_ros_exists",
            "test/node/test_launch_config.py::test_shipped_yaml_is_complete_and_valid"),
           "launch_ros is not on PyPI: the launch file is checked statically (its arguments here too)"),
    Mapped(r"ros2 param set /vggts \S+ \S+",
           ("test/node/test_node_robust.py::test_live_parameters_apply_and_read_only_ones_are_refused",),
           "live parameters set over DDS (the name is checked to be live here)"),
    Mapped(r"ros2 topic pub --once /vggts/click geometry_msgs/msg/PointStamped .*",
           ("test/node/test_node_tools.py::test_a_click_on_an_object_makes_masks_in_the_other_cameras_and_background_is_refused",),
           "a PointStamped on ~/click over DDS"),
    Mapped(r"ros2 service call /vggts/click_to_mask vggts_ros/srv/ClickToMask .*",
           ("test/node/test_node_tools.py::test_the_click_to_mask_service_answers_with_the_mask_or_the_reason",),
           "the service over DDS (the request's fields are checked here)"),
    Mapped(r"ros2 service call /vggts/clear_objects vggts_ros/srv/ClearObjects .*",
           ("test/node/test_node.py::test_masks_and_points_for_every_other_camera_then_clear_stops_them",),
           "the service over DDS"),
    Mapped(r"ros2 run rqt_image_view rqt_image_view /exo1/image_raw",
           ("test/node/test_node_tools.py::test_a_click_in_rqt_image_view_makes_a_mask_on_that_camera",),
           "a geometry_msgs/Point on <image topic>_mouse_left, what rqt_image_view publishes"),
    # replay
    Mapped(r"vggts replay recording/ --source-mask \S+ --role front=ego( --gt-topic \S+)? --out cup\.mcap",
           ("test/tools/test_replay.py::test_replay_mcap_round_trip_and_scores",
            "test/tools/test_replay.py::test_replay_source_mask_on_a_later_stamp"),
           "replay of a bag written from a bundled scene, masks by stamp and @first, scored"),
    Mapped(r"vggts replay recording/ --params-file config/multicam\.yaml .*",
           ("test/tools/test_replay.py::test_replay_with_the_node_parameters_file",
            "test/tools/test_replay.py::test_report_names_the_path_of_each_mask"),
           "replay with the node's parameters file and a JSON report"),
    # benchmarks
    Mapped(r"git -C <mirror of [^>]+> archive HEAD( vggt)? \| tar -x -C /tmp/ref_\w+|"
           r"pip install --target /tmp/ref_pydeps einops|"
           r"PYTHONPATH=/tmp/ref_pydeps REF_VGGT=/tmp/ref_vggt REF_VGGTS=/tmp/ref_vggts "
           r"python bench/bench_vs_reference\.py \[--quick\]",
           ("test/tools/test_bench.py::test_bench_vs_reference_names_what_is_missing",),
           "without the reference checkouts the script must name what is missing (the reference is never in the repo)"),
    Mapped(r"python bench/bench_gpu\.py( .*)?",
           ("test/tools/test_bench.py::test_bench_gpu_dry_run_prints_a_sane_table",),
           "the test runs --dry-run (the other modes need a GPU); the options are checked here"),
    # training and evaluation
    Mapped(r"vggts train --data self --coco ann\.json --images-dir images/ --out runs/self",
           ("test/training/test_torchrun.py::test_two_process_training_and_resume",
            "test/training/test_training.py::test_instances_from_png_pairs_and_coco_agree"),
           "self-training through the train command (PNG pairs); the COCO reader against the PNG one"),
    Mapped(r"torchrun --nproc_per_node \d+ -m vggts_ros\.training\.cli train --data egoexo .*",
           ("test/training/test_torchrun.py::test_two_process_training_and_resume",
            "test/training/test_egoexo_dataset.py::test_cli_trains_on_egoexo_pairs"),
           "train under torchrun (2 processes); the train command on Ego-Exo4D-shaped data"),
    Mapped(r"vggts evaluate --data egoexo .*",
           ("test/training/test_egoexo_dataset.py::test_per_direction_metrics_match_hand_values",
            "test/training/test_training.py::test_smoke_training_learns"),
           "per-direction metrics; the evaluate command reproduces the trainer's number"),
    Mapped(r"torchrun --nproc_per_node \d+ -m vggts_ros\.training\.temporal_train .*",
           ("test/training/test_temporal_training.py::test_two_process_clip_training",
            "test/training/test_temporal_clips.py::test_egoexo_clips_are_consecutive_annotated_moments"),
           "clip training under torchrun (2 processes); Ego-Exo4D clips"),
    Mapped(r"vggts evaluate --clips .* --data self .*",
           ("test/training/test_clip_evaluate.py::test_cli_scores_a_temporal_run_like_evaluate_clips",),
           "the clip evaluation command against evaluate_clips"),
    Mapped(r"vggts evaluate --clips .* --data egoexo .*",
           ("test/training/test_clip_evaluate.py::test_egoexo_clips_report_no_occlusion_and_reject_short_takes",),
           "clip evaluation on Ego-Exo4D-shaped data"),
)


def classify(cmd: Command) -> Tuple[str, Optional[Mapped]]:
    if cmd.text in RUN:
        return "run", None
    matches = [m for m in MAPPED if re.fullmatch(m.pattern, cmd.text)]
    return ("mapped", matches[0]) if matches else ("neither", None)


def test_every_command_is_run_or_mapped_to_a_test_that_exists():
    cmds = all_commands()
    assert len(cmds) > 20, "no commands found: is the extraction broken?"
    neither = [f"{c.where}: {c.text}" for c in cmds if classify(c)[0] == "neither"]
    assert not neither, ("commands neither run by test/tools/test_docs.py nor mapped to a test (add them to RUN "
                         "or MAPPED):\n" + "\n".join(neither))
    problems = []
    for mapped in MAPPED:
        for target in mapped.tests:
            path, _, name = target.partition("::")
            file = REPO / path
            if not file.is_file():
                problems.append(f"{mapped.pattern}: {path} does not exist")
                continue
            text = file.read_text(encoding="utf-8")
            if name and not re.search(rf"^def {re.escape(name)}\(", text, re.M):
                problems.append(f"{mapped.pattern}: {path} has no test {name}")
            if not name:
                problems += [f"{mapped.pattern}: {path} does not contain {s!r}"
                             for s in mapped.contains if s not in text]
    used = {classify(c)[1] for c in cmds} | {None}
    problems += [f"MAPPED entry matches no command any more: {m.pattern}" for m in MAPPED if m not in used]
    texts = {c.text for c in cmds}
    problems += [f"RUN entry is in no page any more: {r}" for r in RUN if r not in texts]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- running
def _env() -> Dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_HUB_OFFLINE"] = "1"
    return env


def readme_python() -> str:
    blocks = [body for lang, _, body in code_blocks(REPO / "README.md") if lang in ("python", "py")]
    assert blocks, "the README shows no Python example"
    return "\n\n".join("\n".join(b) for b in blocks)


def test_readme_python_example_and_the_cheap_commands_run(tmp_path):
    import cv2
    import numpy as np

    script = tmp_path / "readme_example.py"
    script.write_text(readme_python())
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, f"README's Python example failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    # what it prints: the geometric backend finds object 1 of synthetic:0 in exo1
    m = re.search(r"^object_features score [0-9.]+ IoU ([0-9.]+)$", proc.stdout, re.M)
    assert m and float(m.group(1)) > 0.9, proc.stdout

    ran = []
    for cmd in all_commands():
        if classify(cmd)[0] != "run":
            continue
        done = subprocess.run(["bash", "-c", cmd.text], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, f"{cmd.where}: `{cmd.text}` exited {done.returncode}:\n{done.stderr[-3000:]}"
        ran.append((cmd.text, done.stdout))
    assert {text for text, _ in ran} == set(RUN)
    help_text = dict(ran)["vggts --help"]
    assert all(sub in help_text for sub in ("segment", "replay", "demo", "train", "evaluate"))
    # vggts segment found the object the README's scene file names, in both targets
    truth = {c: cv2.imread(str(tmp_path / "scene" / f"{c}_object1.png"), cv2.IMREAD_UNCHANGED) > 0
             for c in ("exo1", "exo2")}
    for camera, mask in truth.items():
        found = cv2.imread(str(tmp_path / "out" / "segment" / f"{camera}_mask.png"), cv2.IMREAD_UNCHANGED) > 0
        iou = np.count_nonzero(found & mask) / max(1, np.count_nonzero(found | mask))
        assert iou > 0.8, f"vggts segment: IoU {iou:.3f} in {camera}"


def test_python_blocks_of_the_docs_parse_and_import_what_exists():
    """docs/*.md Python snippets (fragments: not run) are valid Python, and every
    ``vggts_ros`` name they import exists."""
    import importlib

    problems = []
    for page in PAGES[1:]:
        for lang, first, body in code_blocks(page):
            if lang not in ("python", "py"):
                continue
            try:
                tree = ast.parse("\n".join(body))
            except SyntaxError as exc:
                problems.append(f"{page.relative_to(REPO)}:{first + (exc.lineno or 1) - 1}: {exc.msg}")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vggts_ros":
                    if node.module in ("vggts_ros.msg", "vggts_ros.srv"):
                        continue  # generated by the ROS build
                    module = importlib.import_module(node.module)
                    problems += [f"{page.relative_to(REPO)}:{first + node.lineno - 1}: {node.module} has no {a.name}"
                                 for a in node.names if not hasattr(module, a.name)]
    assert not problems, "\n".join(problems)


def test_ros_marker_selects_the_ros_free_tests():
    """`bash run.sh test -m "not ros"`: run.sh passes its arguments to pytest, and the marker
    leaves out test/node (marked `ros` by directory) and keeps the rest."""
    run_sh = (REPO / "run.sh").read_text()
    assert 'pytest -q -rs -p no:cacheprovider "$@" test' in run_sh
    files = ["test/node/test_launch_config.py", "test/core/test_scene_files.py"]

    def collect(marker: str) -> List[str]:
        proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                               "-m", marker, *files], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
        # (the exit status is 1: test/conftest.py fails a session in which nothing passed)
        assert re.search(r"^\d+/\d+ tests collected \(\d+ deselected\)", proc.stdout, re.M) and \
            "ERROR" not in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]
        return [ln for ln in proc.stdout.splitlines() if "::" in ln]

    free, ros = collect("not ros"), collect("ros")
    assert free and all(item.startswith("test/core/") for item in free), free
    assert ros and all(item.startswith("test/node/") for item in ros), ros


# ----------------------------------------------------------------------------- commands against the code
def _vggts_parser():
    from vggts_ros.cli import build_parser

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, subs.choices


def _options(parser) -> set:
    return {opt for action in parser._actions for opt in action.option_strings}


def _vggts_argv(text: str) -> Optional[List[str]]:
    """The arguments after ``vggts`` (or its module forms) in a command, else None."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    for i, w in enumerate(words):
        if w == "vggts" and (i == 0 or words[i - 1] in ("run.sh", "&&")):
            return words[i + 1:]
        if w == "-m" and i + 1 < len(words) and words[i + 1] in ("vggts_ros.cli", "vggts_ros.training.cli"):
            return words[i + 2:]
    return None


def _option_problems(argv: List[str], subparsers) -> List[str]:
    if not argv or argv[0].startswith("-"):
        return []
    if argv[0] not in subparsers:
        return [f"no subcommand {argv[0]!r} (vggts has {sorted(subparsers)})"]
    known = _options(subparsers[argv[0]])
    return [f"vggts {argv[0]} has no option {w.split('=')[0]}" for w in argv[1:]
            if w.startswith("--") and w.split("=")[0] not in known]


def _bench_problems(text: str) -> List[str]:
    m = re.search(r"(bench/[\w.]+\.py)((?:\s+\S+)*)", text)
    if not m:
        return []
    script = REPO / m.group(1)
    if not script.is_file():
        return [f"{m.group(1)} does not exist"]
    source = script.read_text()
    return [f"{m.group(1)} has no option {opt}" for opt in re.findall(r"(--[\w-]+)", m.group(2))
            if f'"{opt}"' not in source and f"'{opt}'" not in source]


def _launch_arguments() -> set:
    tree = ast.parse((REPO / "launch" / "multicam.launch.py").read_text())
    names = {n.args[0].value for n in ast.walk(tree) if isinstance(n, ast.Call)
             and getattr(n.func, "id", "") == "DeclareLaunchArgument" and n.args
             and isinstance(n.args[0], ast.Constant)}
    for node in ast.walk(tree):  # DeclareLaunchArgument(name, ...) for name in DEFAULT_TOPICS
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict) and \
                any(getattr(t, "id", "") == "DEFAULT_TOPICS" for t in node.targets):
            names |= {k.value for k in node.value.keys}
    return names


def _interface_fields(kind: str, name: str) -> Optional[set]:
    """Field names of vggts_ros's msg/srv ``name`` (a service: its request's), else None."""
    path = REPO / kind / f"{name}.{kind}"
    if not path.is_file():
        return None
    fields = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line == "---":
            break
        if line:
            fields.add(line.split()[1])
    return fields


def _ros_problems(text: str) -> List[str]:
    import yaml

    from vggts_ros.config import PARAMETERS, NodeConfig

    problems = []
    words = shlex.split(text)
    parameters = set(NodeConfig().to_parameters())
    for i, w in enumerate(words):
        if w == "-p" and i + 1 < len(words):
            name = words[i + 1].split(":=")[0]
            if name not in parameters:
                problems.append(f"no parameter {name}")
        if re.match(r"^(config|launch|bench|scripts|docs|test)/\S+$", w) and not (REPO / w).exists():
            problems.append(f"{w} does not exist in the repository")
    if words[:2] == ["ros2", "launch"]:
        if words[2:4] != ["vggts_ros", "multicam.launch.py"]:
            problems.append(f"the package ships launch/multicam.launch.py, not {words[2:4]}")
        declared = _launch_arguments()
        problems += [f"launch argument {w.split(':=')[0]} is not declared in launch/multicam.launch.py"
                     for w in words[4:] if ":=" in w and w.split(":=")[0] not in declared]
    if words[:3] == ["ros2", "param", "set"]:
        name = words[4]
        if name not in parameters:
            problems.append(f"no parameter {name}")
        elif not PARAMETERS.get(name, ("", False))[1]:
            problems.append(f"{name} is not live: `ros2 param set` is refused while the node runs")
    if words[:2] == ["ros2", "run"] and words[2] == "vggts_ros":
        exe = words[3]
        cmake = (REPO / "CMakeLists.txt").read_text()
        if not (REPO / "scripts" / exe).is_file() or f"scripts/{exe}" not in cmake:
            problems.append(f"`ros2 run vggts_ros {exe}`: scripts/{exe} is not installed by CMakeLists.txt")
    if words[:3] in (["ros2", "service", "call"], ["ros2", "topic", "pub"]):
        rest = [w for w in words[3:] if not w.startswith("--")]
        endpoint, type_name, payload = rest[0], rest[1], yaml.safe_load(rest[2]) if len(rest) > 2 else {}
        if endpoint.startswith("/vggts/"):
            local = "~/" + endpoint[len("/vggts/"):]
            code = " ".join(p.read_text() for p in (REPO / "vggts_ros" / "ros").glob("*.py"))
            if f'"{local}"' not in code:
                problems.append(f"the node has no {local}")
        pkg, kind, name = type_name.split("/")
        if pkg == "vggts_ros":
            fields = _interface_fields(kind, name)
            if fields is None:
                problems.append(f"no {kind}/{name}.{kind}")
            else:
                problems += [f"{type_name} has no field {k}" for k in payload if k not in fields]
    return problems


def test_commands_agree_with_the_code():
    parser, subs = _vggts_parser()
    problems = []
    for cmd in all_commands():
        argv = _vggts_argv(cmd.text)
        found = (_option_problems(argv, subs) if argv is not None else []) + _bench_problems(cmd.text)
        if cmd.text.startswith("ros2 ") or " -p " in cmd.text or "--params-file" in cmd.text:
            found += _ros_problems(cmd.text)
        problems += [f"{cmd.where}: `{cmd.text}`: {p}" for p in found]
    for page in PAGES:
        for line, span in inline_spans(page):
            if span.startswith(("vggts ", "bash run.sh vggts ")):
                argv = _vggts_argv(span)
                problems += [f"{page.relative_to(REPO)}:{line}: `{span}`: {p}"
                             for p in _option_problems(argv or [], subs)]
            if "bench/" in span and ".py" in span:
                problems += [f"{page.relative_to(REPO)}:{line}: `{span}`: {p}" for p in _bench_problems(span)]
    assert not problems, "\n".join(problems)


def test_package_xml_and_the_pip_line_cover_every_import():
    """The ROS-workspace install (docs/install.md): rosdep installs package.xml's keys, the
    pip line the rest; together they cover every module the package imports outside
    training (imports guarded by try/except are optional)."""
    rosdep_python = {"numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
                     "sklearn": "python3-sklearn", "skimage": "python3-skimage", "tqdm": "python3-tqdm",
                     "threadpoolctl": "python3-threadpoolctl"}
    pip_names = {"torch": "torch", "huggingface_hub": "huggingface-hub", "rosbags": "rosbags"}
    keys = {e.text for e in ET.parse(REPO / "package.xml").getroot()
            if e.tag in ("depend", "exec_depend", "build_depend")}
    pip_lines = [c.text for c in commands(REPO / "docs" / "install.md") if c.text.startswith("python3 -m pip install")]
    assert len(pip_lines) == 1, pip_lines
    pip = set(pip_lines[0].split()[4:])

    imported: Dict[str, str] = {}
    for path in sorted((REPO / "vggts_ros").rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.parts[1] == "training":
            continue
        tree = ast.parse(path.read_text())
        guarded = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for b in t.body for n in ast.walk(b)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "vggts_ros":
                    imported.setdefault(top, str(rel))
    missing = []
    for module, where in sorted(imported.items()):
        if module in rosdep_python:
            ok = rosdep_python[module] in keys
        elif module in pip_names:
            ok = pip_names[module] in pip
        else:  # a ROS package: its own name is the rosdep key
            ok = module in keys
        if not ok:
            missing.append(f"{module} (imported by {where})")
    assert not missing, "neither package.xml nor docs/install.md's pip line installs: " + ", ".join(missing)


# ----------------------------------------------------------------------------- links
def _slug(heading: str) -> str:
    text = re.sub(r"[`*_]", lambda m: "_" if m.group(0) == "_" else "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set:
    anchors, inside = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            inside = not inside
        elif not inside and re.match(r"^#{1,6} ", line):
            anchors.add(_slug(line.lstrip("#")))
    return anchors


def link_problems(page: Path) -> Tuple[List[str], List[str]]:
    """(problems, pending pages linked but not written yet) of the relative links in ``page``."""
    problems, pending = [], []
    text = page.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for m in re.finditer(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):  # http(s), mailto
            continue
        where = f"{os.path.relpath(page, REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {target}"
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        rel = os.path.relpath(file, REPO)
        if not file.exists():
            if rel in PENDING_PAGES:
                pending.append(rel)
            else:
                problems.append(f"{where}: {rel} does not exist")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            problems.append(f"{where}: no heading #{anchor} in {rel}")
    return problems, pending


def test_relative_links_point_to_existing_files_and_headings():
    problems, pending = [], []
    for page in PAGES:
        found, waiting = link_problems(page)
        problems += found
        pending += waiting
    assert not problems, "\n".join(problems)
    if pending:
        print("links to pages not written yet:", sorted(set(pending)))


def test_the_readme_stays_short():
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 320, f"README.md has {lines} lines; move detail to docs/"


def test_the_checks_catch_what_they_are_for(tmp_path):
    """Each check, given a command or page that is wrong in the way it looks for, says so."""
    _, subs = _vggts_parser()
    assert _option_problems(["segment", "--source", "a.png", "--bogus"], subs) == [
        "vggts segment has no option --bogus"]
    assert _option_problems(["segmnet"], subs)[0].startswith("no subcommand 'segmnet'")
    assert _bench_problems("python bench/bench_gpu.py --no-such-flag") == [
        "bench/bench_gpu.py has no option --no-such-flag"]
    assert _bench_problems("python bench/bench_nothing.py") == ["bench/bench_nothing.py does not exist"]
    assert _ros_problems("ros2 launch vggts_ros multicam.launch.py camera_topic:=/x") == [
        "launch argument camera_topic is not declared in launch/multicam.launch.py"]
    assert _ros_problems("ros2 param set /vggts model.backend geometric") == [
        "model.backend is not live: `ros2 param set` is refused while the node runs"]
    assert _ros_problems("vggts_node --ros-args --params-file config/nothing.yaml -p sync.slope:=1") == [
        "config/nothing.yaml does not exist in the repository", "no parameter sync.slope"]
    bad_field = 'ros2 service call /vggts/click_to_mask vggts_ros/srv/ClickToMask "{camera: a, boxes: []}"'
    assert _ros_problems(bad_field) == [
        "vggts_ros/srv/ClickToMask has no field boxes"]
    assert _ros_problems('ros2 service call /vggts/forget vggts_ros/srv/ClearObjects "{object_id: 0}"') == [
        "the node has no ~/forget"]
    page = tmp_path / "page.md"
    page.write_text("# T\n\n```bash\nvggts segment --x 1 \\\n  --y 2   # why\n```\n\n"
                    "```console\n$ ls -l\ntotal 0\n```\n")
    assert [(c.line, c.text) for c in commands(page)] == [(4, "vggts segment --x 1 --y 2"), (9, "ls -l")]
    assert classify(Command(page, 4, "rm -rf /tmp/x"))[0] == "neither"
    assert _slug("Against the reference, side (`bench/x_y.py`)") == "against-the-reference-side-benchx_ypy"
    page.write_text("# Top\n\n[a](nowhere.md) [b](#top) [c](#bottom) [e](https://x.org/y)\n")
    assert link_problems(page)[0] == [f"{os.path.relpath(page, REPO)}:3: nowhere.md: "
                                      f"{os.path.relpath(tmp_path / 'nowhere.md', REPO)} does not exist",
                                      f"{os.path.relpath(page, REPO)}:3: #bottom: no heading #bottom in "
                                      f"{os.path.relpath(page, REPO)}"]
