#!/usr/bin/env bash
# One entry point for a fresh machine: creates the virtual environment on first use,
# installs the pinned dependencies (CPU PyTorch, ROS 2 wheels), generates the ROS
# interfaces with CMake, installs the package, then runs the requested job.
#
#   bash run.sh demo     # the main job on the embedded default scenes (no camera, no download)
#   bash run.sh test     # the test suite (what CI runs)
#   bash run.sh setup    # only (re)build the environment
#   bash run.sh <cmd>... # run any command inside the environment, e.g. `bash run.sh vggts --help`
#
# ROS distribution: VGGTS_ROS_DISTRO=kilted (default; .venv, requirements-ros.txt) or
# VGGTS_ROS_DISTRO=jazzy (.venv-jazzy, requirements-ros-jazzy.txt). Each environment has
# its own fingerprint stamp; VGGTS_VENV overrides the environment's folder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DISTRO="${VGGTS_ROS_DISTRO:-kilted}"
case "$DISTRO" in
  kilted) ROS_REQUIREMENTS="$ROOT/requirements-ros.txt"; DEFAULT_VENV="$ROOT/.venv" ;;
  jazzy) ROS_REQUIREMENTS="$ROOT/requirements-ros-jazzy.txt"; DEFAULT_VENV="$ROOT/.venv-jazzy" ;;
  *) printf '[vggts] VGGTS_ROS_DISTRO=%s: expected kilted or jazzy (Humble has no wheels; see docs/ros_distributions.md)\n' "$DISTRO" >&2
     exit 2 ;;
esac
export VGGTS_ROS_DISTRO="$DISTRO"  # test/node/test_ros_distro.py checks rclpy is this distro's
VENV="${VGGTS_VENV:-$DEFAULT_VENV}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi

log() { printf '[vggts] %s\n' "$*" >&2; }

fingerprint() {
  # Everything that changes what the environment must contain.
  cat "$ROOT/requirements.txt" "$ROS_REQUIREMENTS" "$ROOT/setup.py" \
      "$ROOT/CMakeLists.txt" "$ROOT/package.xml" "$ROOT"/msg/*.msg "$ROOT"/srv/*.srv \
    | sha256sum | cut -d' ' -f1
}

setup_env() {
  local stamp="$VENV/.vggts-stamp" marker="$VENV/.vggts-distro" want built
  want="$(fingerprint)"
  if [ -x "$VENV/bin/python" ]; then
    # An environment from before the marker existed is a Kilted one.
    built="$(cat "$marker" 2>/dev/null || echo kilted)"
    if [ "$built" != "$DISTRO" ]; then
      log "$VENV was built for ROS 2 ${built^}, not ${DISTRO^}: choose another VGGTS_VENV or remove it"; exit 1
    fi
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  [ -n "$PY" ] || { log "no python3 found; install Python 3.11"; exit 1; }
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
    log "Python 3.11 is required (the ROS 2 ${DISTRO^} wheels are built for it); found $("$PY" --version)"; exit 1; }
  command -v cmake >/dev/null || { log "cmake is required (apt install cmake)"; exit 1; }
  command -v cc >/dev/null || command -v gcc >/dev/null || { log "a C compiler is required (apt install gcc)"; exit 1; }

  log "creating the ROS 2 ${DISTRO^} environment in $VENV"
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  echo "$DISTRO" >"$marker"
  # The wheels put ROS package manifests under the venv: keep colcon from building them.
  touch "$VENV/COLCON_IGNORE"
  pip_install() {
    # This machine's local package mirrors print one warning per missing project; hide them.
    "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" \
      2> >(grep -v '^WARNING: Location' >&2)
  }
  pip_install --upgrade pip
  log "installing Python dependencies (torch==2.13.0 CPU, ROS 2 ${DISTRO^} wheels)"
  pip_install -r "$ROOT/requirements.txt" -r "$ROS_REQUIREMENTS"
  "$VENV/bin/python" -c 'import torch, rclpy, cv2, sklearn' || { log "dependency installation failed"; exit 1; }

  log "generating the ROS interfaces (msg/, srv/) with CMake"
  local build="$ROOT/build/pip-$DISTRO"
  rm -rf "$build"
  mkdir -p "$ROOT/build" && touch "$ROOT/build/COLCON_IGNORE"
  (
    export CMAKE_PREFIX_PATH="$VENV" AMENT_PREFIX_PATH="$VENV"
    cmake -S "$ROOT" -B "$build" -DVGGTS_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
      -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VENV/bin/python" >"$build.log" 2>&1 &&
    cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 &&
    cmake --install "$build" >>"$build.log" 2>&1
  ) || { tail -40 "$build.log" >&2; log "interface generation failed (full log: $build.log)"; exit 1; }

  log "installing vggts_ros"
  pip_install --no-deps --no-build-isolation "$ROOT"
  (cd / && "$VENV/bin/python" -c 'import vggts_ros.msg, vggts_ros.srv, vggts_ros.config') || { log "package installation failed"; exit 1; }
  echo "$want" >"$stamp"
  log "environment ready"
}

cmd="${1:-demo}"
[ $# -gt 0 ] && shift
setup_env
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
case "$cmd" in
  setup) ;;
  demo) exec "$VENV/bin/python" -m vggts_ros.cli demo "$@" ;;
  test) exec "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider "$@" test ;;
  *) exec "$cmd" "$@" ;;
esac
