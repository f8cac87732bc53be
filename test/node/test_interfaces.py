"""The ROS interfaces: generated with CMake on the pip path, exchanged over DDS, and
built in a colcon workspace."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PEER = REPO / "test" / "helpers" / "interface_peer.py"
PYVER = f"python{sys.version_info.major}.{sys.version_info.minor}"
PACKAGE_FILES = ["CMakeLists.txt", "package.xml", "setup.py", "README.md", "msg", "srv", "vggts_ros", "scripts", "launch", "config"]

pytest.importorskip("rclpy", reason="rclpy (ros-kilted-rclpy) is not installed")


def _copy_package(dest: Path) -> Path:
    """A copy of the package sources, as a user would clone them (no .venv, no build/):
    CMake refuses exported include directories that live inside the source tree."""
    dest.mkdir(parents=True)
    for name in PACKAGE_FILES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, dest / name)
    return dest


def _ros_build_env():
    env = dict(os.environ)
    env["CMAKE_PREFIX_PATH"] = sys.prefix
    env["AMENT_PREFIX_PATH"] = sys.prefix
    return env


def _require_tool(name):
    path = shutil.which(name) or (Path(sys.prefix) / "bin" / name if (Path(sys.prefix) / "bin" / name).exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return str(path)


@pytest.fixture(scope="module")
def interface_prefix(tmp_path_factory):
    """Generate the interfaces from msg/ and srv/ into a fresh prefix (the pip path)."""
    cmake = _require_tool("cmake")
    root = tmp_path_factory.mktemp("interfaces")
    build, prefix = root / "build", root / "prefix"
    src = _copy_package(root / "src")
    env = _ros_build_env()
    steps = [
        [cmake, "-S", str(src), "-B", str(build), "-DVGGTS_INTERFACES_ONLY=ON", "-DBUILD_TESTING=OFF",
         f"-DCMAKE_INSTALL_PREFIX={prefix}", f"-DPython3_EXECUTABLE={sys.executable}"],
        [cmake, "--build", str(build), "-j", "2"],
        [cmake, "--install", str(build)],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    site = prefix / "lib" / PYVER / "site-packages"
    assert (site / "vggts_ros" / "msg" / "_projected_points.py").is_file()
    # The generated __init__.py is removed so that it cannot shadow the Python package.
    assert not (site / "vggts_ros" / "__init__.py").exists()
    # ... nor rosidl's egg-info, which pip would treat as an old vggts_ros to uninstall.
    assert not list(site.glob("vggts_ros-*.egg-info"))
    return prefix


def _peer_env(prefix: Path):
    env = dict(os.environ)
    site = prefix / "lib" / PYVER / "site-packages"
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(site)])
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(prefix / "lib"), env.get("LD_LIBRARY_PATH", "")])
    return env


def test_generated_fields_match_the_specification(interface_prefix):
    code = (
        "import json, vggts_ros.msg as m, vggts_ros.srv as s;"
        "print(json.dumps(dict(file=m.__file__, op=m.ObjectPoints.get_fields_and_field_types(),"
        "pp=m.ProjectedPoints.get_fields_and_field_types(),"
        "req=s.SetSourceMask.Request.get_fields_and_field_types(), resp=s.SetSourceMask.Response.get_fields_and_field_types(),"
        "creq=s.ClearObjects.Request.get_fields_and_field_types(), cresp=s.ClearObjects.Response.get_fields_and_field_types())))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_peer_env(interface_prefix), capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr
    f = json.loads(proc.stdout.strip().splitlines()[-1])
    assert f["file"].startswith(str(interface_prefix))
    assert list(f["op"].items())[:6] == [
        ("object_id", "uint8"), ("source_xy", "sequence<float>"), ("target_xy", "sequence<float>"),
        ("visibility", "sequence<float>"), ("confidence", "sequence<float>"), ("score", "float")]
    # added later, at the end: which path made the mask, and why an empty one is empty
    assert list(f["op"].items())[-4:] == [("label", "string"), ("area", "uint32"), ("path", "string"),
                                          ("reason", "string")]
    assert list(f["pp"].items()) == [
        ("header", "std_msgs/Header"), ("source_camera", "string"), ("target_camera", "string"),
        ("objects", "sequence<vggts_ros/ObjectPoints>")]
    assert list(f["req"].items()) == [
        ("camera", "string"), ("mask", "sensor_msgs/Image"), ("object_id", "uint8"),
        ("stamp", "builtin_interfaces/Time"), ("label", "string")]
    assert list(f["resp"].items())[:3] == [("success", "boolean"), ("message", "string"), ("object_id", "uint8")]
    assert list(f["creq"].items()) == [("object_id", "uint8")]
    assert list(f["cresp"].items()) == [("success", "boolean"), ("message", "string")]


def test_service_and_message_round_trip_over_dds(interface_prefix):
    env = _peer_env(interface_prefix)
    server = subprocess.Popen([sys.executable, str(PEER), "server"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready", server.stderr.read()
        client = subprocess.run([sys.executable, str(PEER), "client"], env=env, capture_output=True, text=True, timeout=120)
        assert client.returncode == 0, client.stderr
        report = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    resp = report["response"]
    assert resp["success"] is True and resp["object_id"] == 7
    echoed = resp["message"]
    assert (echoed["width"], echoed["height"], echoed["encoding"], echoed["step"]) == (640, 480, "mono8", 640)
    assert echoed["sha256"] == report["expected_digest"], "mask bytes changed in transit"
    assert echoed["label"] == "mug" and echoed["stamp"] == [1234, 567] and echoed["frame_id"] == "ego_optical"
    assert len(report["messages"]) == 1
    msg = report["messages"][0]
    assert msg["stamp"] == [1234, 567] and msg["frame_id"] == "ego_optical"
    assert (msg["source_camera"], msg["target_camera"]) == ("ego", "exo1")
    assert len(msg["objects"]) == 3
    for got, want in zip(msg["objects"], report["expected_objects"]):
        assert len(got["source_xy"]) == len(got["target_xy"]) == 10
        assert len(got["visibility"]) == len(got["confidence"]) == 5
        assert got == want


def test_the_wheel_ships_the_interface_definitions(tmp_path):
    """pip path: the package carries msg/*.msg and srv/*.srv to <prefix>/share/vggts_ros,
    where `vggts replay` reads them when no source tree is around."""
    import zipfile

    src = _copy_package(tmp_path / "src")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("vggts_ros-*.whl")
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.split(".data/data/", 1)[1]: z.read(n) for n in z.namelist() if ".data/data/share/" in n}
    expected = {f"share/vggts_ros/{p.parent.name}/{p.name}": p.read_bytes()
                for p in sorted(REPO.glob("msg/*.msg")) + sorted(REPO.glob("srv/*.srv"))}
    assert shipped == expected


def test_colcon_workspace_build_installs_interfaces_and_python(tmp_path):
    colcon = _require_tool("colcon")
    _copy_package(tmp_path / "ws" / "src" / "vggts_ros")
    ws = tmp_path / "ws"
    proc = subprocess.run(
        [colcon, "build", "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"],
        cwd=ws, env=_ros_build_env(), capture_output=True, text=True, timeout=600,
    )
    log = ws / "log" / "latest_build" / "vggts_ros" / "stderr.log"
    assert proc.returncode == 0, proc.stdout[-3000:] + (log.read_text()[-3000:] if log.exists() else "")
    install = ws / "install" / "vggts_ros"
    assert (install / "lib" / "vggts_ros" / "vggts_node").is_file()
    assert (install / "share" / "vggts_ros" / "launch" / "multicam.launch.py").is_file()
    assert (install / "share" / "vggts_ros" / "config" / "multicam.yaml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / "vggts_ros").is_file()

    env = dict(os.environ)
    site = install / "lib" / PYVER / "site-packages"
    env["PYTHONPATH"] = str(site)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([str(install / "lib"), env.get("LD_LIBRARY_PATH", "")])
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(install), sys.prefix])
    code = (
        "import json, vggts_ros, vggts_ros.config; from vggts_ros.msg import ProjectedPoints, ObjectPoints;"
        "m = ProjectedPoints(target_camera='exo1', objects=[ObjectPoints(object_id=3)]);"
        "print(json.dumps(dict(msg=ProjectedPoints.__module__, msg_file=__import__('vggts_ros.msg').msg.__file__,"
        "cfg=vggts_ros.config.__file__, obj=m.objects[0].object_id)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["msg_file"].startswith(str(site)) and info["cfg"].startswith(str(site))
    assert info["obj"] == 3

    # The executable `ros2 run vggts_ros vggts_node` starts runs from the install space:
    # given a parameters file with a mistake, it stops with the parameter named.
    tree = yaml.safe_load((install / "share" / "vggts_ros" / "config" / "multicam.yaml").read_text())
    tree["/**"]["ros__parameters"]["sync"]["queue_size"] = 0
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tree))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    proc = subprocess.run([str(install / "lib" / "vggts_ros" / "vggts_node"), "--ros-args", "--params-file", str(params)],
                          env=env, capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "sync.queue_size" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
