"""``vggts``: the command line.

    vggts segment --source S.png --source-mask M.png --target T.png --out DIR
    vggts demo                       # the whole ROS graph on the bundled scenes
    vggts replay BAG --source-mask ego=M.png --out OUT.mcap   # a recorded bag, no ROS needed
    vggts train ... / vggts evaluate ...   # see --help of each

Errors a user can cause (unreadable files, sizes that do not match, empty masks, bad
checkpoints) end with a one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from vggts_ros.config import BACKENDS, MODEL_PRESETS, POINT_IDENTITY, PRECISION_MODES, ModelConfig, NodeConfig, PipelineConfig
from vggts_ros.errors import UsageError, run_command
from vggts_ros.image_io import read_mask, read_rgb, write_png
from vggts_ros.types import ROLES


def cmd_segment(args: argparse.Namespace) -> int:
    from vggts_ros.backends import create_segmentor
    from vggts_ros.types import TargetView
    from vggts_ros.visualize import overlay_masks

    source = read_rgb(args.source)
    mask = read_mask(args.source_mask)
    if mask.shape != source.shape[:2]:
        raise UsageError(
            f"source mask is {mask.shape[1]}x{mask.shape[0]} but the source image is "
            f"{source.shape[1]}x{source.shape[0]} (width x height)"
        )
    if not mask.any():
        raise UsageError(f"source mask {args.source_mask} is empty: no nonzero pixel marks the object")
    roles = args.target_role or ["exo"]
    if len(roles) not in (1, len(args.target)):
        raise UsageError(f"give one --target-role for all targets or one per target ({len(args.target)})")
    roles = roles * len(args.target) if len(roles) == 1 else roles
    targets = [TargetView(read_rgb(p), role=r, name=Path(p).stem) for p, r in zip(args.target, roles)]
    geometry = _geometry_inputs(args, targets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from vggts_ros.backends import choose_backend

    backend = choose_backend(args.backend, args.config, args.vggt_checkpoint or "", args.head_checkpoint or "")
    flags = {"model.backend": backend, "model.config": args.config, "model.device": args.device,
             "model.vggt_checkpoint": args.vggt_checkpoint, "model.head_checkpoint": args.head_checkpoint,
             "inference.refine_iterations": args.refine, "inference.precision": args.precision,
             "inference.point_identity": args.point_identity}
    settings = node_settings(NodeConfig(), {k: v for k, v in flags.items() if v is not None}, args.sets)
    model, pipeline = settings.model, settings.inference.pipeline()
    t0 = time.monotonic()
    segmentor = _build(model, pipeline)
    t_load = time.monotonic() - t0
    t0 = time.monotonic()
    try:
        results = segmentor.segment(source, mask, targets)
    except ValueError as exc:  # inputs the pipeline cannot use, named by the pipeline
        raise UsageError(str(exc)) from exc
    t_run = time.monotonic() - t0
    located = _objects3d(geometry, source, mask, targets, results)
    summary = []
    for view, path, result in zip(targets, args.target, results):
        stem = Path(path).stem
        write_png(out / f"{stem}_mask.png", result.mask.astype(np.uint8) * 255)
        labels = result.mask.astype(np.uint8)
        write_png(out / f"{stem}_overlay.png", overlay_masks(view.image, labels, [result.target_points]))
        summary.append(dict(target=str(path), role=view.role, mask=str(out / f"{stem}_mask.png"),
                            area=int(result.mask.sum()), score=round(float(result.score), 4),
                            points=np.round(np.asarray(result.target_points, dtype=float), 2).tolist()))
        if located is not None:
            from vggts_ros.geometry.messages import object_dict

            summary[-1]["object3d"] = object_dict(result.object3d)
    report = dict(backend=getattr(segmentor, "name", args.backend), config=args.config,
                  load_seconds=round(t_load, 3), segment_seconds=round(t_run, 3), targets=summary)
    if located is not None:
        from vggts_ros.geometry.messages import objects_dict

        report["objects3d"] = dict(cameras={n: objects_dict(o) for n, o in located.cameras.items()},
                                   fused=objects_dict(located.fused) if located.fused is not None else None)
    print(json.dumps(report, indent=2))
    if args.config == "test-tiny" and backend == "vggts":
        print("note: test-tiny has deterministic test weights; its masks are meaningless on real images",
              file=sys.stderr)
    return 0


def read_depth(path: str) -> np.ndarray:
    """A depth image file: ``.npy`` (float metres or uint16 millimetres) or a 16-bit PNG
    (millimetres, as ``16UC1``)."""
    import cv2

    if not Path(path).is_file():
        raise UsageError(f"depth file not found: {path}")
    if path.endswith(".npy"):
        try:
            depth = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise UsageError(f"cannot read {path} as a NumPy array: {exc}") from exc
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if depth is None:
            raise UsageError(f"cannot read {path} as an image")
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise UsageError(f"{path}: a depth PNG must be single-channel 16-bit (millimetres), got "
                             f"{depth.dtype} with shape {depth.shape}")
    return depth


def _geometry_inputs(args, targets) -> Optional[dict]:
    """``--depth``/``--intrinsics``/``--pose`` read and checked before the backend runs (a typo
    does not wait for the segmentation): ``results_in_3d``'s keyword arguments, or None."""
    if not (args.depth or args.intrinsics or args.pose):
        return None
    from vggts_ros.geometry.objects3d_step import pose_matrix
    from vggts_ros.replay import ReplayError, parse_pairs

    names = {t.name for t in targets} | {"source"}
    try:
        given = {flag: parse_pairs(values, flag) for flag, values in
                 (("--depth", args.depth), ("--intrinsics", args.intrinsics), ("--pose", args.pose))}
    except ReplayError as exc:
        raise UsageError(str(exc)) from exc
    for flag, pairs in given.items():
        unknown = sorted(set(pairs) - names)
        if unknown:
            raise UsageError(f"{flag} given for unknown camera(s) {unknown}; cameras: 'source' and the targets' "
                             f"file stems {sorted(names - {'source'})}")
    numbers: dict = {}
    for flag in ("--intrinsics", "--pose"):
        numbers[flag] = {}
        for k, v in given[flag].items():
            try:
                numbers[flag][k] = [float(x) for x in v.replace(",", " ").split()]
            except ValueError:
                raise UsageError(f"{flag} {k}={v}: expected numbers separated by commas") from None
            if flag == "--intrinsics" and len(numbers[flag][k]) != 4:
                raise UsageError(f"--intrinsics {k}: needs 4 numbers fx,fy,cx,cy, got {len(numbers[flag][k])}")
            if flag == "--pose":
                try:
                    pose_matrix(numbers[flag][k])
                except ValueError as exc:
                    raise UsageError(f"--pose {k}: {exc}") from exc
    return dict(depth={k: read_depth(v) for k, v in given["--depth"].items()}, intrinsics=numbers["--intrinsics"],
                poses=numbers["--pose"], frame=args.frame or "")


def _objects3d(geometry: Optional[dict], source: np.ndarray, mask: np.ndarray, targets, results):
    """The object in 3D per camera (and fused) of one segment call, or None without depth."""
    if geometry is None:
        return None
    from vggts_ros.geometry.results3d import results_in_3d

    try:
        return results_in_3d(results, targets, source_mask=mask, source_name="source",
                             source_size=(source.shape[1], source.shape[0]), **geometry)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def node_settings(base: NodeConfig, flags: Dict[str, Any], sets: Optional[List[str]]) -> NodeConfig:
    """``base`` with the parameters the command's own options give (``flags``, by node
    parameter name) and then its ``--set NAME=VALUE`` items; the model, inference and sync
    settings are checked (cameras are the caller's business). Errors are UsageErrors."""
    from vggts_ros.schema import field_errors, parse_assignments

    try:
        changes = dict(flags)
        changes.update(parse_assignments(sets or []))
        settings = base.with_parameters(changes)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    errors = field_errors(settings)  # every section (the cameras are checked by NodeConfig.validate)
    if errors:
        raise UsageError("; ".join(errors))
    return settings


def _build(model: ModelConfig, pipeline: PipelineConfig):
    from vggts_ros.backends import create_segmentor
    from vggts_ros.checkpoint import CheckpointError

    try:
        return create_segmentor(model, pipeline)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def cmd_replay(args: argparse.Namespace) -> int:
    from vggts_ros import replay as rp
    from vggts_ros.bags import BagError
    from vggts_ros.config import CameraConfig, GeometryConfig, NodeConfig, SyncConfig, load_node_config

    try:
        node = load_node_config(args.params_file, args.node_name) if args.params_file else None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--params-file {args.params_file}: {exc}") from exc
    if args.sets:  # --set NAME=VALUE: node parameters on top of the params file (or the defaults)
        backend_given = bool(node) or any(s.strip().startswith("model.backend=") for s in args.sets)
        node = node_settings(node or NodeConfig(), {}, args.sets)
    else:
        backend_given = bool(node)
    try:
        cameras = list(node.cameras) if node else []
        for name, topic in rp.parse_pairs(args.camera, "--camera").items():
            cameras = [c for c in cameras if c.name != name] + [CameraConfig(name, topic)]
        roles = rp.parse_pairs(args.role, "--role")
        sync = node.sync if node else SyncConfig()
        for key in ("slop", "queue_size", "stale_after"):
            if getattr(args, key) is not None:
                setattr(sync, key, getattr(args, key))
        masks = [rp.parse_source_mask(spec, read_mask, i + 1) for i, spec in enumerate(args.source_mask or [])]
        options = rp.ReplayOptions(
            cameras=cameras, sync=sync, source_masks=masks,
            mask_topics=rp.parse_pairs(args.mask_topic, "--mask-topic"),
            gt_topics=rp.parse_pairs(args.gt_topic, "--gt-topic"),
            namespace=args.namespace, overlay=not args.no_overlay, copy_inputs=not args.no_copy_inputs,
            progress=not args.no_progress, roles=roles,
            source_mode=args.source_mode or (node.inference.source_mode if node else "keyframe"),
            realtime=args.realtime, step_seconds=args.step_seconds,
            propagation=args.propagation or (node.publish.propagation if node else False),
            max_age=args.max_age if args.max_age is not None else (node.publish.max_age if node else 2.0),
            refresh_pairs=(args.refresh_pairs if args.refresh_pairs is not None
                           else (node.publish.refresh_pairs if node else 0)),
            depth_topics=rp.parse_pairs(args.depth_topic, "--depth-topic"),
            geometry=node.geometry if node else GeometryConfig(),
        )
        if options.step_seconds is not None and not options.step_seconds > 0:
            raise rp.ReplayError(f"--step-seconds must be > 0, got {options.step_seconds}")
        if not options.max_age > 0:
            raise rp.ReplayError(f"--max-age must be > 0 s, got {options.max_age}")
        if options.refresh_pairs < 0:
            raise rp.ReplayError(f"--refresh-pairs must be >= 0 (0 = all), got {options.refresh_pairs}")
    except rp.ReplayError as exc:
        raise UsageError(str(exc)) from exc

    model = node.model if node else ModelConfig()
    from vggts_ros.backends import choose_backend

    backend = choose_backend(args.backend, args.config or model.config, args.vggt_checkpoint or "",
                             args.head_checkpoint or "", default=node.model.backend if backend_given else "geometric")
    model.backend, model.device = backend, args.device or model.device
    if args.config:
        model.config = args.config
    if args.vggt_checkpoint:
        model.vggt_checkpoint = args.vggt_checkpoint
    if args.head_checkpoint:
        model.head_checkpoint = args.head_checkpoint
    refine = args.refine if args.refine is not None else (node.inference.refine_iterations if node else 1)
    built = {}

    def load():
        t0 = time.monotonic()
        from vggts_ros.backends import pipeline_config

        # the node's mapping of its parameters (temporal memory, precision, ...), as the node runs it
        pipe = pipeline_config(node.inference, model, node.geometry) if node else \
            dataclasses.replace(PipelineConfig(), geometry_heads=options.geometry.vggt_heads)
        built["segmentor"] = _build(model, dataclasses.replace(pipe, refine_iterations=refine))
        built["seconds"] = time.monotonic() - t0
        return built["segmentor"]

    try:
        result = rp.replay(args.input, args.out, load, options, storage=args.storage)
    except (rp.ReplayError, BagError) as exc:
        raise UsageError(str(exc)) from exc
    segmentor, t_load = built["segmentor"], built["seconds"]
    sets = len(result.sets)
    written = sum(len(v) for v in result.outputs.values())
    print(f"replay: {result.messages_read} camera messages, {sets} synchronised sets, {written} target masks "
          f"written to {args.out} ({getattr(segmentor, 'name', backend)} backend; load {t_load:.1f} s, "
          f"replay {result.seconds - t_load:.1f} s)")
    print("cameras: " + ", ".join(f"{c.name} ({c.role}, {c.topic})" for c in result.cameras))
    if result.objects3d:
        estimates = [o for r in result.objects3d for c in r["cameras"].values() for o in c["objects"]]
        why: Dict[str, int] = {}
        for o in estimates:
            if o["reason"]:
                why[o["reason"]] = why.get(o["reason"], 0) + 1
        print(f"objects in 3D: {len(estimates) - sum(why.values())} of {len(estimates)} per-camera estimates, "
              f"{sum(1 for r in result.objects3d if r['fused'])} fused sets")
        for reason, n in sorted(why.items(), key=lambda kv: -kv[1]):
            print(f"  {n:>4} x no 3D: {reason}")
    for line in result.camera_problems():
        print(f"warning: {line}", file=sys.stderr)
    if result.steps:
        secs = sorted(st["seconds"] for st in result.steps)
        print(f"real time: {len(result.steps)} cross-view steps (median {secs[len(secs) // 2]:.2f} s), "
              f"{result.dropped_sets} sets left out while the worker was busy"
              + (", masks propagated on the frames between" if options.propagation else ""))
    empty = result.empty_reasons()
    if empty:
        print(f"{sum(empty.values())} of {len(result.results)} object masks are empty:")
        for why, count in sorted(empty.items(), key=lambda kv: -kv[1]):
            print(f"  {count:>4} x {why or 'no reason given by the backend'}")
    if result.scores:
        print(rp.format_scores(result))
    if args.report:
        report = dict(
            input=str(args.input), output=str(args.out), backend=getattr(segmentor, "name", backend),
            cameras=[dict(name=c.name, topic=c.topic, role=c.role, frames=result.frames_read.get(c.name, 0),
                          present=bool(result.frames_read.get(c.name))) for c in result.cameras],
            sets=[dict(stamp=s.stamp, stamps=s.stamps, missing=list(s.missing)) for s in result.sets],
            outputs={k: v for k, v in result.outputs.items()},
            skipped_frames=result.skipped_frames,
            frames_read=result.frames_read,
            skip_reasons=result.skip_reasons,
            cameras_without_messages=[c.name for c in result.cameras if not result.frames_read.get(c.name)],
            results=result.results,
            scores=[vars(r) for r in result.scores],
            mean_iou={f"{cam}/{oid}": v for (cam, oid), v in result.mean_iou().items()},
            stream=result.stream,
            steps=result.steps, dropped_sets=result.dropped_sets,
            objects3d=result.objects3d,
        )
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def add_replay_arguments(rep: argparse.ArgumentParser) -> None:
    rep.add_argument("input", help="rosbag2 directory (sqlite3 or MCAP storage), .mcap or .db3 file")
    rep.add_argument("--out", required=True, help="output: a .mcap file, or a rosbag2 directory (MCAP storage)")
    rep.add_argument("--source-mask", action="append",
                     help="CAMERA=PNG[@STAMP|@first]: object drawn on that camera's frame with that stamp "
                          "(seconds; default its first frame); repeat for several objects (ids 1, 2, ...)")
    rep.add_argument("--mask-topic", action="append",
                     help="CAMERA=TOPIC: mono8 label images in the bag (value = object id) drawn on the frames "
                          "of that camera with the same stamp")
    rep.add_argument("--gt-topic", action="append",
                     help="CAMERA=TOPIC: ground-truth mono8 label images (value = object id) to score against")
    rep.add_argument("--camera", action="append",
                     help="NAME=TOPIC; default: every image topic, named after it (/x/front/image_raw -> front)")
    rep.add_argument("--role", action="append", help=f"NAME=ROLE with ROLE one of {', '.join(ROLES)} (default exo)")
    rep.add_argument("--depth-topic", action="append",
                     help="CAMERA=TOPIC: that camera's registered depth images (32FC1 m / 16UC1 mm) in the bag; "
                          "objects in 3D are written to <namespace>/<camera>/objects3d (also camera.<name>.depth_topic "
                          "of --params-file)")
    rep.add_argument("--params-file", help="the node's parameters YAML (cameras, sync, model, inference)")
    rep.add_argument("--node-name", default="vggts", help="node name to read from --params-file (default vggts)")
    rep.add_argument("--slop", type=float, help="synchroniser slop in seconds (default 0.05)")
    rep.add_argument("--queue-size", type=int, help="synchroniser queue size (default 10)")
    rep.add_argument("--stale-after", type=float, help="seconds of silence after which a camera is left out (default 1)")
    rep.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS,
                     help="auto: vggts when both checkpoints are given, else the weight-free geometric backend")
    rep.add_argument("--config", choices=MODEL_PRESETS, help="model preset (default vggt-1b)")
    rep.add_argument("--vggt-checkpoint", help="VGGT-1B model.pt: a path, a directory or a Hugging Face repo id")
    rep.add_argument("--head-checkpoint", help="VGGT-S main_exp.pth: a path, a directory or a repo id")
    rep.add_argument("--refine", type=int, help="refinement iterations (default 1)")
    rep.add_argument("--source-mode", choices=("keyframe", "track"),
                     help="keyframe (default): masks stay on the frame they were drawn on; track: they "
                          "follow the object into the source camera's newer frames")
    rep.add_argument("--device", default="", help="auto, cpu or cuda")
    rep.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                     help="a node parameter over --params-file, e.g. model.geometric.ratio=0.7 or "
                          "sync.slop=0.1 (names and values: docs/parameters.md; repeatable)")
    rep.add_argument("--namespace", default="/vggts", help="output topics <namespace>/<camera>/{mask,points,overlay}")
    rep.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"),
                     help="storage of a directory output (a .mcap output is always MCAP)")
    rep.add_argument("--no-overlay", action="store_true", help="do not write overlay images")
    rep.add_argument("--no-copy-inputs", action="store_true", help="do not copy the camera topics into the output")
    rep.add_argument("--no-progress", action="store_true", help="no progress bar")
    rep.add_argument("--report", help="write the sets, outputs and scores as JSON here")
    rep.add_argument("--realtime", action="store_true",
                     help="one cross-view worker on the recording's clock: it takes the newest set when free, "
                          "its results come out when its step's time is up, sets that come while it is busy "
                          "are left out")
    rep.add_argument("--propagation", action="store_true",
                     help="masks on every target frame between cross-view results, moved by a per-camera "
                          "tracker (implies --realtime; publish.propagation)")
    rep.add_argument("--step-seconds", type=float,
                     help="real time: every cross-view step takes this long on the recording's clock "
                          "(reproducible); default: its measured CPU time")
    rep.add_argument("--max-age", type=float,
                     help="propagation: s since its cross-view result after which a mask is not good "
                          "(publish.max_age, default 2)")
    rep.add_argument("--refresh-pairs", type=int,
                     help="propagation: (object, target) pairs per cross-view step, oldest first; 0 = all "
                          "(publish.refresh_pairs)")
    rep.set_defaults(func=cmd_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vggts", description="VGGT-Segmentor: cross-view object segmentation")
    sub = parser.add_subparsers(dest="command", required=True)

    seg = sub.add_parser("segment", help="segment, in target images, the object masked in a source image")
    seg.add_argument("--source", required=True, help="source image (PNG/JPEG)")
    seg.add_argument("--source-mask", required=True, help="source mask image, nonzero = object")
    seg.add_argument("--target", required=True, action="append", help="target image; repeat for several")
    seg.add_argument("--target-role", action="append", choices=ROLES,
                     help="role of the target camera (default exo); once for all or once per --target")
    seg.add_argument("--out", required=True, help="output directory")
    seg.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS,
                     help="auto (default): vggts when it runs without a download (test-tiny, or both checkpoints "
                          "given), else the weight-free geometric backend")
    seg.add_argument("--config", default="vggt-1b", choices=MODEL_PRESETS,
                     help="vggt-1b (published weights) or test-tiny (deterministic weights, for tests only)")
    seg.add_argument("--vggt-checkpoint", help="VGGT-1B model.pt: a path, a directory or a Hugging Face repo id")
    seg.add_argument("--head-checkpoint", help="VGGT-S main_exp.pth: a path, a directory or a repo id")
    seg.add_argument("--refine", type=int, default=1, help="refinement iterations (default 1)")
    seg.add_argument("--precision", choices=PRECISION_MODES, default="float32",
                     help="numeric mode: float32 (default; TF32 off on CUDA), tf32, bf16 (backbone autocast), "
                          "release (the released scripts' CUDA bf16 autocast), float64")
    seg.add_argument("--point-identity", choices=POINT_IDENTITY, default="accumulate",
                     help="refinement semantics: accumulate (reference, default) or per_pass")
    seg.add_argument("--device", default="auto", help="auto, cpu or cuda")
    seg.add_argument("--depth", action="append",
                     help="NAME=FILE: registered depth of 'source' or a target (its file stem): .npy float metres "
                          "or uint16 mm, or a 16-bit PNG in mm; the object in 3D goes into the JSON")
    seg.add_argument("--intrinsics", action="append", help="NAME=fx,fy,cx,cy of that image (needed with --depth)")
    seg.add_argument("--pose", action="append",
                     help="NAME=x,y,z,qx,qy,qz,qw: that camera's optical frame in one reference frame; with two or "
                          "more the object is also fused")
    seg.add_argument("--frame", help="name of the fused frame (default: the first camera with depth)")
    seg.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                     help="any model.* or inference.* node parameter, applied after the options above, e.g. "
                          "model.geometric.ratio=0.7 (names and values: docs/parameters.md; repeatable)")
    seg.set_defaults(func=cmd_segment)

    add_replay_arguments(sub.add_parser(
        "replay", help="run a recorded bag (rosbag2/MCAP) through the synchroniser and pipeline, without ROS"))

    from vggts_ros import demo

    demo.add_arguments(sub.add_parser("demo", help="run the node on the bundled scenes and report IoU"))

    try:
        from vggts_ros.training import cli as train_cli
    except ImportError:  # training extras are optional
        train_cli = None
    if train_cli is not None:
        train_cli.add_commands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
