"""``vggts demo``: the whole ROS graph on bundled scenes, scored against ground truth.

For each scene a real ``vggts_node`` process starts with the scene's cameras; a player
node publishes the views as synchronised camera streams, a client sets every object's
source mask by service, and the masks the node publishes are compared with the scene's
exact ground truth. Output: one overlay mosaic PNG per scene, ``results.json`` and a
table of IoU per target view, with the backend that produced them, the path that made
each mask and, for each object the node published empty, its "not found" reason.

Objects in 3D: the player also publishes each view's exact depth (``32FC1``) and its
``camera_info``, the node gets the true camera poses (in the source camera's frame) as
static extrinsics; the 3D column is the published centroid's error against the centroid
of the view's exact depth under its exact mask (% of its distance), and the fused boxes
are scored against the scenes' true boxes (``boxes3d`` in results.json).

The default scenes include the hard cases of the weight-free backend (tall boxes at
wide baselines, a flat-coloured box, a painted wall), whatever their IoU.

The moving scene (``--moving``, default ``moving:0/5s``; ``--moving ''`` skips it): a bundled
sequence of :mod:`vggts_ros.sequences` (a walking ego camera, a panning and a still exo
camera, three boxes of which one slides behind another) played at its rate (10 Hz) to a node
with ``publish.propagation`` on, so that masks come at camera rate between the cross-view
results. The boxes are given once, on the ego camera's first frame; every frame's published
masks are scored against that frame's exact masks (``moving_scene`` in results.json: per
target camera the share of frames with a published label image, the good masks, their mean
IoU, how many were propagated and from how old a cross-view result).

Without checkpoints the node runs the weight-free geometric backend (a baseline, not
VGGT-S); with ``--vggt-checkpoint`` and ``--head-checkpoint`` (local files) it runs the
learned model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from vggts_ros.config import (BACKENDS, MODEL_PRESETS, CameraConfig, GeometryConfig, InferenceConfig, ModelConfig,
                               NodeConfig, PublishConfig, SyncConfig)

# The easy scenes, then the hard cases for the weight-free backend (vggts_ros.scenes):
# tall boxes at wide baselines, a flat-coloured box, a painted wall.
DEFAULT_SCENES = "synthetic:0,synthetic:1,motorcycle,tall:0,textureless:0,wall:0"
# The moving scene: 5 s of moving:0 at 10 Hz (about 15 s of wall time on top of the still scenes).
DEFAULT_MOVING = "moving:0/5s"
# Its node: masks at camera rate between the cross-view results (docs/propagation.md), with
# the deadline and the pairs per cross-view step that docs/propagation.md measures the stream
# and `vggts replay --propagation` with: 3 of the 6 (box, target) pairs per step, oldest first
# (a step every 0.7-1 s here instead of 2 s for all six), and a deadline above the refresh
# period of the weight-free backend on a loaded 2-core machine.
MOVING_MAX_AGE = 6.0
MOVING_REFRESH_PAIRS = 3


_AGE = re.compile(r"^propagated\(age=([0-9.]+)s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS,
                        help="auto: vggts when both checkpoints are local files (or --config test-tiny), else geometric")
    parser.add_argument("--config", default="vggt-1b", choices=MODEL_PRESETS)
    parser.add_argument("--vggt-checkpoint", default="", help="VGGT-1B model.pt (local path)")
    parser.add_argument("--head-checkpoint", default="", help="VGGT-S main_exp.pth (local path)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--scenes", default=DEFAULT_SCENES,
                        help="comma-separated: synthetic:<seed>, tall:<seed>, textureless:<seed>, wall:<seed>, "
                             "motorcycle (default %(default)s)")
    parser.add_argument("--moving", default=DEFAULT_MOVING,
                        help="a moving sequence played at its rate to a node with publish.propagation on, the boxes "
                             "given on the ego camera's first frame, every frame's masks scored: moving:<seed>, "
                             "slide:<seed> or still:<seed>, optionally @<rate>hz and /<seconds>s; '' skips it "
                             "(default %(default)s)")
    parser.add_argument("--out", default="out/demo", help="directory for mosaics and results.json")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for a scene's outputs")
    parser.set_defaults(func=run)


def choose_model(args: argparse.Namespace) -> ModelConfig:
    from vggts_ros.backends import choose_backend

    learned_ready = bool(args.vggt_checkpoint and args.head_checkpoint
                         and Path(args.vggt_checkpoint).exists() and Path(args.head_checkpoint).exists())
    backend = choose_backend(args.backend, args.config, args.vggt_checkpoint if learned_ready else "",
                             args.head_checkpoint if learned_ready else "")
    model = ModelConfig(backend=backend, config=args.config, device=args.device)
    if args.vggt_checkpoint:
        model.vggt_checkpoint = args.vggt_checkpoint
    if args.head_checkpoint:
        model.head_checkpoint = args.head_checkpoint
    return model


def load_scenes(spec: str):
    from vggts_ros import scenes

    return [scenes.load_scene(item) for item in [s.strip() for s in spec.split(",") if s.strip()]]


def _scene_config(scene, model: ModelConfig, prefix: str = "/vggts_demo") -> NodeConfig:
    """The scene's cameras, each with its exact depth as a depth topic and its true pose in
    the source camera's optical frame (static extrinsics: the fused objects are in that frame)."""
    from vggts_ros.geometry.boxes import quaternion_from_matrix

    cams = []
    for name in scene.views:
        cam = CameraConfig(name, f"{prefix}/{scene.name}/{name}/image_raw", scene.role(name))
        if name in scene.depths:
            cam.depth_topic = f"{prefix}/{scene.name}/{name}/depth/image_raw"
        if scene.cameras:
            T = scene.cameras[scene.source].T_cam_from_world @ scene.cameras[name].T_world_from_cam
            cam.pose = [float(v) for v in T[:3, 3]] + [float(v) for v in quaternion_from_matrix(T[:3, :3])]
        cams.append(cam)
    return NodeConfig(
        cameras=cams,
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=5.0),
        model=model,
        inference=InferenceConfig(refine_iterations=1, source_mode="keyframe"),
        publish=PublishConfig(overlay=True, diagnostics_period=1.0),
        geometry=GeometryConfig(frame=scene.source),
    )


def _moving_config(seq, model: ModelConfig, prefix: str = "/vggts_demo") -> NodeConfig:
    """The sequence's cameras (no depth, no static poses: the cameras move), masks at camera
    rate (``publish.propagation``), the oldest pairs refreshed at each cross-view step."""
    cams = [CameraConfig(name, f"{prefix}/{seq.name}/{name}/image_raw", seq.role(name)) for name in seq.cameras]
    return NodeConfig(
        cameras=cams,
        sync=SyncConfig(slop=0.02, queue_size=5, stale_after=5.0),
        model=model,
        inference=InferenceConfig(refine_iterations=1, source_mode="keyframe"),
        publish=PublishConfig(overlay=False, diagnostics_period=1.0, propagation=True, max_age=MOVING_MAX_AGE,
                              refresh_pairs=MOVING_REFRESH_PAIRS),
    )


class SceneNode:
    """One scene's node process, started ahead of time: while a scene's outputs are
    scored and its graph torn down, the next scene's node is already loading."""

    def __init__(self, scene, model: ModelConfig, index: int, configure: Callable = _scene_config) -> None:
        """``configure(scene, model, prefix)``: the node's configuration (a still scene's by
        default; :func:`_moving_config` for a moving sequence)."""
        from vggts_ros.ros.player import NodeProcess

        # Names unique to this run and scene: two demos on one host and domain, or two
        # scenes' nodes alive at once, must not cross-talk.
        self.base = f"vggts_demo_{os.getpid()}_{index}"
        self.cfg = configure(scene, model, prefix=f"/{self.base}")
        # The demo's camera streams are reliable end to end (player and the node's
        # subscriptions, through the node's REP-2003 qos_overrides): a best-effort image
        # that loses one 64 KB fragment is lost whole, and under load that starved the
        # node of frames for > 30 s even with large transport buffers. Real cameras keep
        # sensor-data QoS (README).
        reliable = {"reliability": "reliable", "history": "keep_last", "depth": 5}
        overrides = {t: {"subscription": dict(reliable)}
                     for c in self.cfg.cameras for t in (c.topic, c.depth_topic) if t}
        self.process = NodeProcess(self.cfg, node_name=self.base, extra_params={"qos_overrides": overrides}).start()
        self.started = time.monotonic()
        self.interrupted = False

    def interrupt(self) -> None:
        """Ask the node to exit (SIGINT) without waiting: its clean shutdown (which may
        finish an inference first) takes seconds the next scene can use."""
        if self.process.alive() and not self.interrupted:
            self.process.proc.send_signal(signal.SIGINT)
            self.interrupted = True

    def finish(self, timeout: float = 30.0) -> None:
        """Wait for the node to exit (asked to, if not yet); killed after ``timeout``."""
        if self.interrupted and self.process.alive():
            try:
                self.process.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.proc.kill()
        self.process.stop(timeout)  # SIGINT and wait if still running; closes its log


def run_scene(scene, model: ModelConfig, out_dir: Path, timeout: float, started: Optional[SceneNode] = None,
              when_done: Optional[Callable[[], None]] = None) -> Dict:
    """Run one scene through a node process (``started``, or one started here); return
    its metrics rows and timings. ``when_done`` is called once the outputs are in."""
    from vggts_ros import metrics
    from vggts_ros.ros.player import CameraPlayer, OutputCollector, PlayedCamera, Spinner, wait_until
    from vggts_ros.visualize import mosaic, overlay_masks

    own = started is None
    started = started or SceneNode(scene, model, 0)
    base, cfg, node = started.base, started.cfg, started.process
    # each camera's exact depth (32FC1 metres) and K (camera_info) beside its images
    played = [PlayedCamera(c.name, c.topic, scene.image(c.name), depth=scene.depths.get(c.name),
                           depth_topic=c.depth_topic, K=scene.cameras[c.name].K if scene.cameras else None)
              for c in cfg.cameras]
    player = CameraPlayer(played, rate_hz=5.0,
                          name=f"{base}_cameras", reliable=True)
    collector = OutputCollector(base, [c.name for c in cfg.cameras], name=f"{base}_client", objects3d=True)
    with3d = any(c.depth_topic for c in cfg.cameras)
    spinner = Spinner(player, collector)
    t0 = started.started
    try:
        _wait_for_node(node, player, collector, list(scene.views))
        depth_cams = [c.name for c in cfg.cameras if c.depth_topic]
        if not wait_until(lambda: all(int((collector.camera_status(c) or {}).get("depth_received", 0) or 0) > 0
                                      for c in depth_cams), 30):
            got = {c: (collector.camera_status(c) or {}).get("depth_received") for c in depth_cams}
            raise RuntimeError(f"the node reports no depth images within 30 s (received {got}):\n{node.log()[-3000:]}")
        startup = time.monotonic() - t0
        ids = scene.object_ids
        for oid in ids:
            resp = collector.set_source_mask(scene.source, scene.mask(scene.source, oid), object_id=oid,
                                             label=f"object {oid}")
            if not resp.success:
                raise RuntimeError(f"set_source_mask refused object {oid}: {resp.message}")
        targets = scene.targets

        def complete() -> bool:
            for cam in targets:
                latest = collector.latest("points", cam)
                if latest is None or {o.object_id for o in latest.msg.objects} != set(ids):
                    return False
                if collector.at_stamp("masks", cam, latest.stamp) is None:
                    return False  # the set's mask is still on its way
                if with3d and cfg.camera(cam).depth_topic and \
                        collector.at_stamp("objects3d", cam, latest.stamp) is None:
                    return False  # its objects in 3D too
            if with3d and scene.cameras:
                newest = collector.latest("points", targets[0])
                if collector.at_stamp("objects3d", "", newest.stamp) is None:
                    return False  # and the fused ones
            return True

        t_set = time.monotonic()
        if not wait_until(complete, timeout, period=0.1):
            raise RuntimeError(f"no complete output within {timeout:.0f} s:\n{node.log()[-3000:]}")
        first_output = time.monotonic() - t_set

        def complete3d() -> bool:
            """A complete set whose cameras all had their depth (the first sets after start-up
            may come from frames older than the first depth image)."""
            if not complete():
                return False
            for cam in targets:
                got = collector.at_stamp("objects3d", cam, collector.latest("points", cam).stamp) \
                    if cfg.camera(cam).depth_topic else None
                if got is not None and any("no depth image" in o.reason for o in got.msg.objects):
                    return False
            return True

        if with3d:
            wait_until(complete3d, 30, period=0.1)  # else scored as it is: the reasons are in the table
        if when_done is not None:
            when_done()
        status = collector.pipeline_status() or {}
        rows: List[Dict] = []
        tiles = [overlay_masks(scene.image(scene.source), _labels(scene, scene.source))]
        titles = [f"{scene.source} (source, {scene.role(scene.source)})"]
        for cam in targets:
            points_msg = collector.latest("points", cam)
            mask_msg = collector.at_stamp("masks", cam, points_msg.stamp).msg
            labels = np.frombuffer(bytes(mask_msg.data), np.uint8).reshape(mask_msg.height, mask_msg.width)
            points = {o.object_id: np.asarray(o.target_xy, np.float32).reshape(-1, 2)
                      for o in points_msg.msg.objects}
            published = {o.object_id: o for o in points_msg.msg.objects}
            ious = []
            for oid in ids:
                gt = scene.mask(cam, oid)
                pred = labels == oid
                row = dict(scene=scene.name, target=cam, role=scene.role(cam), object=oid,
                           iou=metrics.iou(gt, pred), location_error=metrics.location_error(gt, pred),
                           contour_accuracy=metrics.contour_accuracy(gt, pred),
                           gt_area=int(gt.sum()), pred_area=int(pred.sum()),
                           # as published: the path that made the mask, and why it is empty if it is
                           path=published[oid].path, reason=published[oid].reason)
                row.update(_centroid_row(scene, cam, oid, collector.at_stamp("objects3d", cam, points_msg.stamp)))
                rows.append(row)
                ious.append(row["iou"])
            tile = overlay_masks(scene.image(cam), labels, [points[o] for o in ids if o in points])
            tiles.append(_outline(tile, _labels(scene, cam)))
            titles.append(f"{cam} ({scene.role(cam)}): mean IoU {np.mean(ious):.2f}")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{scene.name}_mosaic.png"
        from vggts_ros.image_io import write_png

        write_png(path, mosaic(tiles, titles))
        fused = collector.at_stamp("objects3d", "", collector.latest("points", targets[0]).stamp) if with3d else None
        return dict(rows=rows, mosaic=str(path), startup_seconds=startup, first_output_seconds=first_output,
                    diagnostics=status, boxes3d=_box_rows(scene, fused))
    finally:
        spinner.close()
        if own:
            started.finish()
        else:
            started.interrupt()  # the caller waits for it (finish) while the next scene runs
        player.destroy_node()
        collector.destroy_node()


def _wait_for_node(node, player, collector, cameras: List[str]) -> None:
    """Until the node process serves its services and reports frames from every camera."""
    from vggts_ros.ros.player import wait_until

    if not wait_until(lambda: collector._set.service_is_ready() or not node.alive(), 120) or not node.alive():
        raise RuntimeError(f"the node did not start:\n{node.log()[-3000:]}")
    if not collector.wait_for_frames(cameras, 30):
        received = {c: (collector.camera_status(c) or {}).get("received", "no diagnostics") for c in cameras}
        raise RuntimeError(f"the node reports no frames from the cameras within 30 s ({len(player.stamps)} "
                           f"published per camera, node received {received}):\n{node.log()[-3000:]}")


def load_moving(spec: str):
    """The moving sequence named by ``--moving`` (None for '')."""
    from vggts_ros.sequences import load_sequence

    return load_sequence(spec) if spec.strip() else None


def run_moving(seq, model: ModelConfig, out_dir: Path, timeout: float, started: Optional[SceneNode] = None,
               when_done: Optional[Callable[[], None]] = None) -> Dict:
    """Play ``seq`` at its rate to a node with ``publish.propagation`` (``started``, or one
    started here), give every box on the source camera's first frame, and score each frame's
    published masks against that frame's exact masks. Returns the ``moving_scene`` section."""
    from vggts_ros.ros.player import OutputCollector, PlayedCamera, SequencePlayer, Spinner, wait_until
    from vggts_ros.visualize import mosaic, overlay_masks

    own = started is None
    started = started or SceneNode(seq, model, 0, configure=_moving_config)
    base, cfg, node = started.base, started.cfg, started.process
    # every frame rendered before the first tick; frame 0 plays until the boxes are given
    first = seq.frame(0)
    player = SequencePlayer(seq, [PlayedCamera(c.name, c.topic, first.image(c.name)) for c in cfg.cameras],
                            rate_hz=seq.rate, name=f"{base}_cameras", reliable=True)
    collector = OutputCollector(base, seq.cameras, name=f"{base}_client")
    spinner = Spinner(player, collector)
    t0 = started.started
    try:
        _wait_for_node(node, player, collector, seq.cameras)
        startup = time.monotonic() - t0
        ids, targets, source = seq.object_ids, seq.targets, seq.source
        for oid in ids:  # once, on the source camera's first frame (the newest while frame 0 plays)
            resp = collector.set_source_mask(source, player.frame(0).mask(source, oid), object_id=oid,
                                             label=f"box {oid}")
            if not resp.success:
                raise RuntimeError(f"set_source_mask refused box {oid}: {resp.message}")
        t_set = time.monotonic()

        def tracked() -> bool:
            """Every target publishes every box: the first cross-view result is in."""
            for cam in targets:
                latest = collector.latest("points", cam)
                if latest is None or {o.object_id for o in latest.msg.objects} != set(ids):
                    return False
            return True

        if not wait_until(tracked, timeout, period=0.05):
            raise RuntimeError(f"no cross-view result within {timeout:.0f} s:\n{node.log()[-3000:]}")
        first_output = time.monotonic() - t_set
        player.go = True
        if not wait_until(lambda: player.finished, len(seq) / seq.rate + 60, period=0.1):
            raise RuntimeError(f"the player did not play the sequence ({player.index} of {len(seq)} frames)")
        sent: Dict[int, float] = {}
        for stamp, k in player.sent():
            sent.setdefault(k, stamp)  # the first stamp of each frame (the last one repeats)
        # camera rate: masks for the last frame (or a repeat of it) follow within milliseconds
        end = sent[len(seq) - 1]
        wait_until(lambda: all(getattr(collector.latest("masks", c), "stamp", 0.0) >= end for c in targets), 5)
        if when_done is not None:
            when_done()
        status = collector.pipeline_status() or {}
        frames = list(range(1, len(seq)))  # frame 0 carries the boxes given; scored: the frames after it
        per_target: Dict[str, Dict] = {}
        rows: List[Dict] = []
        tiles = [overlay_masks_of(player.frame(0), source)]
        titles = [f"{source} frame 0 (source: the boxes given)"]
        for cam in targets:
            stats = _score_moving_target(player, collector, cam, ids, frames, sent)
            per_target[cam] = stats.pop("summary")
            rows += stats["rows"]
            last = stats["last"]
            if last is not None:
                k, labels, points = last
                truth = player.frame(k)
                exact = np.zeros(labels.shape, np.uint8)
                for oid, m in truth.masks[cam].items():
                    exact[m] = oid
                tiles.append(_outline(overlay_masks(truth.image(cam), labels, points), exact))
                t = per_target[cam]
                titles.append(f"{cam} frame {k}: masks on {t['published']}/{t['frames']} frames, "
                              f"IoU {t['mean_iou']:.2f}")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{seq.name}_mosaic.png"
        from vggts_ros.image_io import write_png

        write_png(path, mosaic(tiles, titles))
        return dict(sequence=seq.name, rate_hz=seq.rate, frames=len(seq), scored_frames=len(frames),
                    cameras={c: seq.role(c) for c in seq.cameras}, source=source, targets=targets,
                    parameters={"publish.propagation": True, "publish.max_age": cfg.publish.max_age,
                                "publish.refresh_pairs": cfg.publish.refresh_pairs,
                                "inference.source_mode": cfg.inference.source_mode},
                    cross_view_steps=int(status.get("sets_processed", 0) or 0),
                    propagated_frames=int(status.get("propagated_frames", 0) or 0),
                    per_target=per_target, per_object=rows, mosaic=str(path), startup_seconds=startup,
                    first_output_seconds=first_output, diagnostics=status,
                    camera_diagnostics={c: collector.camera_status(c) or {} for c in seq.cameras})
    finally:
        spinner.close()
        if own:
            started.finish()
        else:
            started.interrupt()
        player.destroy_node()
        collector.destroy_node()


def overlay_masks_of(scene, cam: str) -> np.ndarray:
    """``cam``'s image with its exact masks (the ones given)."""
    from vggts_ros.visualize import overlay_masks

    return overlay_masks(scene.image(cam), _labels(scene, cam))


def _score_moving_target(player, collector, cam: str, ids: List[int], frames: List[int],
                         sent: Dict[int, float]) -> Dict:
    """One target camera over ``frames``: the label image and points published for each
    frame's stamp, each box's mask against that frame's exact mask. A *good* mask is one
    published with an area and no reason; a propagated one says so in its path."""
    from vggts_ros import metrics

    published = 0
    good_ious: Dict[int, List[float]] = {oid: [] for oid in ids}
    visible = {oid: 0 for oid in ids}
    paths = {"propagated": 0, "cross_view": 0}
    ages: List[float] = []
    reasons: Dict[str, int] = {}
    missing: List[int] = []
    last = None
    for k in frames:
        truth = player.frame(k)
        for oid in ids:
            visible[oid] += bool(truth.mask(cam, oid).any())
        stamp = sent.get(k)
        mask_msg = collector.at_stamp("masks", cam, stamp) if stamp is not None else None
        points_msg = collector.at_stamp("points", cam, stamp) if stamp is not None else None
        if mask_msg is None or points_msg is None:
            missing.append(k)
            continue
        published += 1
        labels = np.frombuffer(bytes(mask_msg.msg.data), np.uint8).reshape(mask_msg.msg.height, mask_msg.msg.width)
        for o in points_msg.msg.objects:
            if o.object_id not in good_ious:
                continue
            if o.reason or o.area == 0:
                why = re.sub(r"\d+(\.\d+)?", "n", o.reason)[:80] or "empty"  # counted by kind
                reasons[why] = reasons.get(why, 0) + 1
                continue
            good_ious[o.object_id].append(metrics.iou(truth.mask(cam, o.object_id), labels == o.object_id))
            m = _AGE.match(o.path)
            if m:
                paths["propagated"] += 1
                ages.append(float(m.group(1)))
            else:
                paths["cross_view"] += 1
        last = (k, labels, [np.asarray(o.target_xy, np.float32).reshape(-1, 2) for o in points_msg.msg.objects])
    all_good = [v for vs in good_ious.values() for v in vs]
    n = len(frames)
    rows = [dict(target=cam, object=oid, visible_frames=visible[oid], good=len(good_ious[oid]),
                 mean_iou=float(np.mean(good_ious[oid])) if good_ious[oid] else None) for oid in ids]
    summary = dict(frames=n, published=published, published_fraction=published / n if n else 0.0,
                   good_masks=len(all_good), object_frames=n * len(ids),
                   visible_object_frames=int(sum(visible.values())),
                   mean_iou=float(np.mean(all_good)) if all_good else 0.0,
                   propagated=paths["propagated"], cross_view=paths["cross_view"],
                   age_median=float(np.median(ages)) if ages else None, age_max=float(max(ages)) if ages else None,
                   not_good=reasons, unpublished_frames=missing)
    return dict(summary=summary, rows=rows, last=last)


def format_moving(moving: Dict) -> str:
    """The moving scene's section of results.txt."""
    p = moving["parameters"]
    lines = [f"moving scene: {moving['sequence']} ({moving['rate_hz']:g} Hz, {moving['scored_frames']} frames scored "
             f"after the boxes given on {moving['source']}'s frame 0; publish.propagation on, max_age "
             f"{p['publish.max_age']:g} s; {moving['cross_view_steps']} cross-view steps)",
             "  published: frames with a label image for that very frame; good masks: box-frames published with "
             "an area and no reason, their IoU against that frame's exact mask; age: of the cross-view result "
             "a propagated mask came from",
             f"  {'target':<8} {'published':>13} {'good masks':>14} {'mean IoU':>8} {'propagated':>10} "
             f"{'cross-view':>10} {'age median':>10} {'age max':>8}"]
    for cam, t in moving["per_target"].items():
        age = f"{t['age_median']:.2f} s" if t["age_median"] is not None else "-"
        top = f"{t['age_max']:.2f} s" if t["age_max"] is not None else "-"
        good = t["good_masks"] / max(1, t["object_frames"])
        lines.append(f"  {cam:<8} {t['published']:>3}/{t['frames']:<3} {t['published_fraction']:>5.2f} "
                     f"{t['good_masks']:>4}/{t['object_frames']:<4} {good:>4.2f} "
                     f"{t['mean_iou']:>8.3f} {t['propagated']:>10} {t['cross_view']:>10} {age:>10} {top:>8}")
    for r in moving["per_object"]:
        iou = f"{r['mean_iou']:.3f}" if r["mean_iou"] is not None else "-"
        lines.append(f"    {r['target']:<8} box {r['object']}: good on {r['good']} frames (visible on "
                     f"{r['visible_frames']}), mean IoU {iou}")
    for cam, t in moving["per_target"].items():
        for why, count in sorted(t["not_good"].items(), key=lambda kv: -kv[1]):
            lines.append(f"    {cam:<8} not good x{count}: {why}")
    return "\n".join(lines)


def _centroid_row(scene, cam: str, oid: int, received) -> Dict:
    """The published centroid of ``oid`` in ``cam`` against the truth (the centroid of the
    exact depth under the exact mask of that view), as a share of its distance."""
    if received is None:
        return dict(centroid_error=None, distance=None, points3d=0, reason3d="no objects3d for this camera")
    o = next((o for o in received.msg.objects if o.object_id == oid), None)
    truth = scene.surface_points(cam, oid).mean(0)
    dist = float(np.linalg.norm(truth))
    if o is None or o.reason:
        return dict(centroid_error=None, distance=dist, points3d=0, reason3d=o.reason if o else "not published")
    err = float(np.linalg.norm(np.array([o.centroid.x, o.centroid.y, o.centroid.z]) - truth)) / dist
    return dict(centroid_error=err, distance=dist, points3d=int(o.points), reason3d="")


def _box_rows(scene, received) -> List[Dict]:
    """Each fused box (source camera's frame) against the scene's true box: size error (worst
    axis, share of the true size) and centre error (share of the true centre's distance)."""
    from vggts_ros.geometry.boxes import OrientedBox, compare_boxes, matrix_from_quaternion

    if received is None or not scene.boxes:
        return []
    out = []
    for o in received.msg.objects:
        truth = scene.box(o.object_id, scene.source)
        dist = float(np.linalg.norm(truth.center))
        if o.reason:
            out.append(dict(scene=scene.name, object=o.object_id, size_error=None, centre_error=None,
                            cameras=list(o.cameras), reason=o.reason))
            continue
        q = o.orientation
        box = OrientedBox(np.array([o.box_center.x, o.box_center.y, o.box_center.z]),
                          np.array([o.size.x, o.size.y, o.size.z]), matrix_from_quaternion([q.x, q.y, q.z, q.w]))
        c = compare_boxes(box, truth)
        out.append(dict(scene=scene.name, object=o.object_id, size_error=float(c["size_error"]),
                        centre_error=float(c["center_error"]) / dist, cameras=list(o.cameras), reason=""))
    return out


def _labels(scene, cam: str) -> np.ndarray:
    first = scene.mask(cam, scene.object_ids[0])
    labels = np.zeros(first.shape, np.uint8)
    for oid in scene.object_ids:
        labels[scene.mask(cam, oid)] = oid
    return labels


def _outline(image: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Ground-truth outlines in white over a prediction overlay."""
    import cv2

    out = image.copy()
    for oid in np.unique(labels):
        if oid:
            contours, _ = cv2.findContours((labels == oid).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    return out


def format_table(rows: List[Dict], backend: str, boxes: Optional[List[Dict]] = None) -> str:
    """IoU, location error and contour accuracy per target and object, the 3D centroid's
    error (% of the distance; "-" when there is none, the reason below), the path that made
    each mask and, for an empty one, the published "not found" reason; then the 3D summary
    (centroids and the fused boxes)."""
    lines = [f"backend: {backend}",
             f"{'scene':<14} {'target':<8} {'role':<7} {'obj':>3} {'IoU':>6} {'LE':>6} {'CA':>6} {'3D %':>6}  path"]
    for r in rows:
        err = r.get("centroid_error")
        c3d = f"{100 * err:>6.2f}" if err is not None else f"{'-':>6}"
        line = (f"{r['scene']:<14} {r['target']:<8} {r['role']:<7} {r['object']:>3} {r['iou']:>6.3f} "
                f"{r['location_error']:>6.3f} {r['contour_accuracy']:>6.3f} {c3d}  {r.get('path', '')}")
        if r.get("reason"):
            line += f" ({r['reason']})"
        lines.append(line)
    per_view: Dict = {}
    for r in rows:
        per_view.setdefault((r["scene"], r["target"]), []).append(r["iou"])
    lines.append("mean IoU per target view:")
    for (scene, target), values in per_view.items():
        lines.append(f"  {scene:<14} {target:<8} {np.mean(values):.3f}")
    lines.append(f"overall mean IoU: {np.mean([r['iou'] for r in rows]):.3f}")
    empty = [r for r in rows if r["pred_area"] == 0]
    lines.append(f"not found: {len(empty)} of {len(rows)} object/view pairs (reasons above)")
    lines += _table3d(rows, boxes or [])
    return "\n".join(lines)


def _table3d(rows: List[Dict], boxes: List[Dict]) -> List[str]:
    """The 3D column's summary: centroid errors (share of the distance) over the pairs with
    an estimate, the pairs without one and why, the fused boxes' errors."""
    errs = np.array([r["centroid_error"] for r in rows if r.get("centroid_error") is not None])
    if not len(errs) and not boxes:
        return []
    lines = [f"3D centroid error (% of the distance; truth: the exact depth under the exact mask): "
             f"median {100 * np.median(errs):.2f}, 95th percentile {100 * np.percentile(errs, 95):.2f}, "
             f"max {100 * errs.max():.2f} over {len(errs)} of {len(rows)} pairs" if len(errs) else
             f"3D: no centroid over {len(rows)} pairs"]
    for r in rows:
        if r.get("centroid_error") is None and r.get("reason3d"):
            lines.append(f"  no 3D: {r['scene']} {r['target']} object {r['object']}: {r['reason3d']}")
    done = [b for b in boxes if b["size_error"] is not None]
    if done:
        lines.append(f"fused boxes (static poses, source camera's frame): size error worst "
                     f"{100 * max(b['size_error'] for b in done):.1f} % (median "
                     f"{100 * np.median([b['size_error'] for b in done]):.1f} %), centre error worst "
                     f"{100 * max(b['centre_error'] for b in done):.2f} % of the distance, over {len(done)} boxes")
    for b in boxes:
        if b["size_error"] is None:
            lines.append(f"  no fused box: {b['scene']} object {b['object']}: {b['reason']}")
    return lines


def run(args: argparse.Namespace) -> int:
    import rclpy

    from vggts_ros.ros import transport

    # The demo's graph is self-contained: keep discovery on this host (a fresh machine's
    # default, SUBNET, would also match other hosts' nodes), and give the camera player
    # and the node DDS buffers that hold whole images (see vggts_ros.ros.transport).
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    transport.configure()

    t_start = time.monotonic()
    model = choose_model(args)
    scenes = load_scenes(args.scenes)
    seq = load_moving(args.moving)
    out_dir = Path(args.out)
    if model.backend == "geometric":
        print("backend: geometric (weight-free baseline; pass --vggt-checkpoint and --head-checkpoint "
              "to run VGGT-S)", flush=True)
    else:
        print(f"backend: vggts ({model.config}, {model.vggt_checkpoint}, {model.head_checkpoint})", flush=True)
    rclpy.init()
    results = []
    moving: Optional[Dict] = None
    # the still scenes, then the moving one (its node too starts while the scene before is scored)
    items = [(scene, _scene_config) for scene in scenes] + ([(seq, _moving_config)] if seq is not None else [])
    nodes: List[SceneNode] = []

    def start_upto(index: int) -> None:
        """Start the nodes of the scenes up to ``index`` (those not started yet)."""
        while len(nodes) <= min(index, len(items) - 1):
            item, configure = items[len(nodes)]
            nodes.append(SceneNode(item, model, len(nodes), configure=configure))

    try:
        for i, (item, configure) in enumerate(items):
            start_upto(i)
            t0 = nodes[i].started
            # the next scene's node loads while this one is scored and closed
            run_item = run_moving if configure is _moving_config else run_scene
            result = run_item(item, model, out_dir, args.timeout, started=nodes[i],
                              when_done=lambda i=i: start_upto(i + 1))
            if i > 0:
                nodes[i - 1].finish()  # long gone in general: at most three node processes at once
            result["wall_seconds"] = time.monotonic() - t0
            if configure is _moving_config:
                moving = result
                print(f"{item.name}: {len(item)} frames at {item.rate:g} Hz in {result['wall_seconds']:.1f} s "
                      f"-> {result['mosaic']}", flush=True)
            else:
                results.append(result)
                print(f"{item.name}: {len(result['rows'])} object/view pairs in {result['wall_seconds']:.1f} s "
                      f"-> {result['mosaic']}", flush=True)
    finally:
        for started in nodes:
            started.finish()
        rclpy.shutdown()
    rows = [r for res in results for r in res["rows"]]
    boxes = [b for res in results for b in res.get("boxes3d", [])]
    parts = [format_table(rows, model.backend, boxes) if rows else f"backend: {model.backend}"]
    if moving is not None:
        parts.append(format_moving(moving))
    table = "\n".join(parts)
    print(table)
    wall = time.monotonic() - t_start
    summary = dict(backend=model.backend, config=model.config, wall_seconds=wall, scenes=results,
                   moving_scene=moving)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2, default=float))
    (out_dir / "results.txt").write_text(table + "\n")
    print(f"demo finished in {wall:.1f} s; results in {out_dir}/")
    return 0
