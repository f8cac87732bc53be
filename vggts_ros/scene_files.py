"""A bundled scene (:mod:`vggts_ros.scenes`) as PNG files, the inputs ``vggts segment`` takes.

    python -m vggts_ros.scene_files synthetic:0 scene/

writes every view as ``<camera>.png`` (RGB) and every object's exact mask in every view as
``<camera>_object<id>.png`` (mono8, 255 = object, all 0 where the object is not seen), and
prints the source camera, the targets and the object ids.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from vggts_ros.scenes import Scene, load_scene


def write_scene(scene: Scene, directory: str | Path) -> Dict[str, Path]:
    """Write ``scene`` into ``directory`` (created if needed); returns name -> path of every
    file written (``<camera>`` and ``<camera>_object<id>``)."""
    import cv2

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written: Dict[str, Path] = {}

    def put(name: str, image: np.ndarray) -> None:
        path = out / f"{name}.png"
        if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
            raise OSError(f"cannot write {path}")
        written[name] = path

    for camera in scene.views:
        put(camera, scene.image(camera)[..., ::-1])  # OpenCV writes BGR
        for object_id in scene.object_ids:
            put(f"{camera}_object{object_id}", scene.mask(camera, object_id).astype(np.uint8) * 255)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vggts_ros.scene_files",
                                     description="write a bundled scene's views and exact masks as PNG files")
    parser.add_argument("scene", help="synthetic:<seed>, tall:<seed>, textureless:<seed>, wall:<seed> or motorcycle")
    parser.add_argument("out", help="directory to write into")
    args = parser.parse_args(argv)
    try:
        scene = load_scene(args.scene)
        written = write_scene(scene, args.out)
    except (ValueError, OSError) as exc:
        print(f"scene_files: error: {exc}", file=sys.stderr)
        return 2
    print(f"{scene.name}: source {scene.source}, targets {', '.join(scene.targets)}, objects "
          f"{scene.object_ids}; {len(written)} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
