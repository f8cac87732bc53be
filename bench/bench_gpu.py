"""GPU benchmark of the full-size model: per-stage latency, peak memory, achieved TFLOP/s.

    python bench/bench_gpu.py [--modes float32 tf32 bf16 release] [--compile] [--cuda-graphs]
                              [--objects 1] [--repeats 10] [--peak-tflops X] [--json out.json]
    python bench/bench_gpu.py --dry-run      # tiny config on CPU, one iteration (the test suite runs it)

What runs: the VGGT-1B backbone (aggregator + track head) and the Union Segmentation Head
at 518/37 with deterministic random weights (timing does not depend on the values), on
one synchronised set of 3 cameras (source + 2 targets) as the pipeline schedules it:

  first pass     aggregator + DPT features over the 3 views
  tracker        50 points through the 3 views (once per object)
  features pass  aggregator + DPT over [source crop, 2 targets] (once per object)
  features xO     the features passes of O objects (``--objects``): one backbone call
                   per object, and all of them as one batched call (what the pipeline
                   does by default, ``batch_features``); same FLOPs, larger batches
  head encode / head decode / head refine   batched over the 2 targets
  segment_objects  the whole public call on synthetic frames (ego 704x704, 2 exo
                   960x540), including the NumPy stages (K-means, crops, recovery);
                   a second row with the features passes one call per object

Precision modes (``vggts_ros.precision``): ``float32`` (TF32 off for matmul and cuDNN),
``tf32`` (TF32 on), ``bf16`` (aggregator under bf16 autocast, the rest float32, TF32 off),
``release`` (CUDA bf16 autocast around the backbone's aggregator and around the head, as
the released scripts run; on a CPU it changes nothing, like the released scripts). The
``segment_objects`` row gets the aggregator's autocast but not the head's (the pipeline
has no precision setting of its own yet). ``--compile`` wraps each stage in
``torch.compile``; ``--cuda-graphs`` captures each stage into a CUDA graph (a stage whose
capture fails is timed eagerly and the reason printed).

Achieved TFLOP/s = counted FLOPs (bench/flops.py: matmul/conv/attention only) / latency,
against the device's dense peak for the mode (table ``PEAKS`` by device name, or
``--peak-tflops``). ``--dry-run`` runs a 70 px network of the same structure
(``dry_run_preset``) on CPU, one iteration of every mode that can run there (tf32 is
CUDA-only), through the same code.

Host syncs/copies inside the pipeline's loops (vggts_ros/pipeline.py and models/ as merged
on this branch; each one blocks the CPU until the GPU catches up; the README
"Performance" has the same list as a table):

  images_to_tensor   H2D copy of the uint8 views, once per backbone pass (first pass,
               then per object): input data, needed.
  track/_track_one   H2D copy of the queries, and D2H ``.cpu().numpy()`` of coords/vis/conf
               per tracker call (per object; per (object, target) with second_pass):
               needed, K-means/outlier removal/crops are NumPy.
  decode       H2D copies of prompts and source mask per features group: inputs built in
               NumPy, needed (could be one pinned copy).
  recover_result  D2H ``frame.cpu().numpy()`` per (object, target): the result is a NumPy
               mask, needed; then ``float(score)`` (computed on the device), a second tiny
               sync that could ride on the logits copy.
  _StageClock  ``torch.cuda.synchronize`` at every stage boundary, 4 per object: only for
               the timings, avoidable (CUDA events).
  models/heads/track_modules: ``grid_scale`` builds ``torch.tensor([...], device=)`` once
               per correlation level per tracker call (7) and ``sample_points`` twice per
               call: small blocking H2D copies, no longer inside the iteration loop
               (fid-models); avoidable with Python-float arithmetic.
  models/aggregator.py forward     ``torch.tensor(IMAGENET_MEAN/STD).to(device)``, 2 H2D
               copies per backbone pass: avoidable (Python floats or buffers).
  models/union_head/common.py ``points`` ``torch.tensor([w, h], device=)`` per point
               encoding (2 per head encode): avoidable the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.flops import stage_flops  # noqa: E402
from vggts_ros import precision  # noqa: E402
from vggts_ros.config import (  # noqa: E402
    AggregatorConfig,
    BackboneConfig,
    HeadConfig,
    ModelPreset,
    PipelineConfig,
    TrackHeadConfig,
    model_preset,
)

MODES = ("float32", "tf32", "bf16", "release")

# Dense peaks in TFLOP/s by device-name substring: (bf16/fp16 tensor, tf32 tensor, fp32 non-tensor).
# Vendor data sheets (dense, i.e. without 2:4 sparsity). First match wins, so specific names come first.
PEAKS = [
    ("H100 PCIe", (756.0, 378.0, 51.2)),
    ("H100 NVL", (835.0, 418.0, 60.0)),
    ("H100", (989.4, 494.7, 66.9)),  # SXM5
    ("H200", (989.4, 494.7, 66.9)),
    ("GH200", (989.4, 494.7, 66.9)),
    ("A100", (312.0, 156.0, 19.5)),
    ("L40S", (362.1, 183.0, 91.6)),
    ("L4", (121.0, 60.0, 30.3)),
    ("A10", (125.0, 62.5, 31.2)),
    ("RTX 4090", (165.2, 82.6, 82.6)),
    ("RTX 3090", (71.0, 35.6, 35.6)),
    ("Orin", (42.5, 21.3, 5.3)),  # Jetson AGX Orin 64GB, derived in README "Performance"
]


def device_peaks(name: str) -> Optional[tuple]:
    for key, peaks in PEAKS:
        if key.lower() in name.lower():
            return peaks
    return None


def mode_peak(peaks: Optional[tuple], mode: str) -> Optional[float]:
    """The peak that bounds a mode: fp32 cores for float32, TF32 for tf32, bf16 otherwise."""
    if peaks is None:
        return None
    return {"float32": peaks[2], "tf32": peaks[1]}.get(mode, peaks[0])


# ---------------------------------------------------------------------------------------
# precision (vggts_ros.precision: the project's one definition of the modes)
# ---------------------------------------------------------------------------------------
class ModeSetup:
    """How a stage runs in one precision mode: the TF32 flags (``precision_context``), the
    backbone's aggregator autocast dtype and the head's autocast (``precision.autocast``)."""

    def __init__(self, mode: str, device: torch.device, seg) -> None:
        self.mode, self.device, self.seg = mode, device, seg
        p = precision.plan(mode)
        applies = p.autocast_device is None or p.autocast_device == device.type
        self.backbone_dtype = p.backbone_autocast if (p.backbone_autocast is not None and applies) else torch.float32
        self.head_autocast = p.head_autocast is not None and applies

    @contextlib.contextmanager
    def active(self):
        old = self.seg.backbone.dtype
        self.seg.backbone.dtype = self.backbone_dtype
        try:
            with precision.precision_context(self.mode, self.device):
                yield self
        finally:
            self.seg.backbone.dtype = old

    def head(self, fn: Callable) -> Callable:
        """``fn`` under the mode's head autocast."""

        def run():
            with precision.autocast(self.mode, self.device, "head"):
                return fn()

        return run


def mode_runs_on(mode: str, device: torch.device) -> Optional[str]:
    """None when ``mode`` can run on ``device``, else the reason it cannot."""
    if mode == "tf32" and device.type != "cuda":
        return "TF32 is a CUDA tensor-core mode"
    if mode in ("bf16", "release") and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "this GPU has no bf16"
    return None


# ---------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int) -> List[float]:
    """Seconds per call; CUDA events on the GPU, wall clock on the CPU."""
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return out


def graph_capture(fn: Callable[[], object], device: torch.device):
    """Capture ``fn`` (static inputs closed over) into a CUDA graph; returns a replay callable."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            fn()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


# ---------------------------------------------------------------------------------------
# the model and its stages
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def init_weights(module: torch.nn.Module, seed: int, device: torch.device) -> None:
    """Deterministic random weights drawn on ``device`` (fast for 1B parameters): the
    fixtures' scaling (1 + 0.02 n for norm weights, 0.02 n for vectors, n/sqrt(fan_in))."""
    gen = torch.Generator(device=device).manual_seed(seed)
    state = module.state_dict()
    for key in sorted(state):
        t = state[key]
        if not torch.is_floating_point(t):
            continue
        x = torch.randn(t.shape, generator=gen, device=device, dtype=torch.float32)
        if t.dim() <= 1:
            x = 1.0 + 0.02 * x if key.endswith(".weight") else 0.02 * x
        else:
            x = x / math.sqrt(math.prod(t.shape[1:]))
        t.copy_(x)


def dry_run_preset() -> ModelPreset:
    """A 70 px network of the full model's structure (24-layer aggregator, DPT, tracker,
    2-block head), small enough for a CPU smoke run of every stage in seconds."""
    return ModelPreset(
        BackboneConfig(AggregatorConfig(img_size=70, embed_dim=32, depth=24, num_heads=2, patch_embed="conv"),
                       TrackHeadConfig(corr_levels=3, hidden_size=96)),
        HeadConfig(img_size=70, sa_tokens=5),
        image_size=70,
    )


def build(preset_name: str, device: torch.device):
    from vggts_ros.models.backbone import VGGTBackbone
    from vggts_ros.models.union_head import UnionSegmentationHead
    from vggts_ros.pipeline import VGGTSegmentor

    p = dry_run_preset() if preset_name == "dry-run" else model_preset(preset_name)
    with torch.device("meta"):
        backbone = VGGTBackbone(p.backbone)
        head = UnionSegmentationHead(p.head)
    backbone = backbone.to_empty(device=device).eval()
    head = head.to_empty(device=device).eval()
    init_weights(backbone, 0, device)
    init_weights(head, 1, device)
    seg = VGGTSegmentor(backbone, head, PipelineConfig(), device=device, image_size=p.image_size)
    return p, seg


def scene(h: int, w: int, seed: int) -> np.ndarray:
    """A blocky random RGB frame (K-means and crops behave as on textured images)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(base, np.ones((16, 16, 1), np.uint8))[:h, :w])


def make_stages(seg, size: int, points: int, device: torch.device, objects: int, setup: "ModeSetup"
                ) -> Dict[str, Callable]:
    """Closures over static inputs, one per stage (what a CUDA graph can replay)."""
    from vggts_ros.types import TargetView

    gen = torch.Generator().manual_seed(0)
    views = torch.rand(1, 3, 3, size, size, generator=gen).to(device)
    query = (torch.rand(1, points, 2, generator=gen) * (size - 1)).to(device)
    g = size // 2
    feats = torch.randn(1, 3, seg.backbone.cfg.track_head.features, g, g, generator=gen).to(device)
    t = 2
    fmap = torch.randn(t, 2, seg.head.cfg.embed_dim, g, g, generator=gen).to(device)
    src = (torch.rand(t, 5, 2, generator=gen) * (size - 1)).to(device)
    tar = (torch.rand(t, 5, 2, generator=gen) * (size - 1)).to(device)
    mask = torch.zeros(t, size, size, device=device)
    mask[:, size // 4 : size // 2, size // 3 : 2 * size // 3] = 1
    head, backbone = seg.head, seg.backbone
    batch_views = views.expand(objects, -1, -1, -1, -1).contiguous()
    state: Dict[str, object] = {}
    state["ctx"] = setup.head(lambda: head.encode(fmap, src, tar, mask))()
    state["low"] = setup.head(lambda: head.decode(state["ctx"]))()[1]

    ego, exo1, exo2 = scene(704, 704, 0), scene(540, 960, 1), scene(540, 960, 2)
    masks = []
    for o in range(objects):
        m = np.zeros((704, 704), np.uint8)
        y0, x0 = 150 + 90 * (o % 4), 200 + 60 * (o // 4)
        m[y0 : y0 + 160, x0 : x0 + 120] = 1
        masks.append(m)
    targets = [TargetView(exo1, role="exo"), TargetView(exo2, role="exo")]
    from vggts_ros.pipeline import VGGTSegmentor

    one_by_one = VGGTSegmentor(seg.backbone, seg.head, seg.cfg, device=device, image_size=seg.image_size,
                               batch_features=False)

    return {
        "first pass (backbone, 3 views)": lambda: backbone(views).features,
        f"tracker ({points} pts, 3 views)": lambda: backbone.track(feats, query),
        "features pass (backbone, 3 views)": lambda: backbone(views).features,
        f"features x{objects} one call per object": lambda: [backbone(views).features for _ in range(objects)],
        f"features x{objects} one batched call": lambda: backbone(batch_views).features,
        "head encode (2 targets)": setup.head(lambda: head.encode(fmap, src, tar, mask)),
        "head decode (2 targets)": setup.head(lambda: head.decode(state["ctx"])),
        "head refine (2 targets)": setup.head(lambda: head.decode(state["ctx"], state["low"])),
        f"segment_objects ({objects} obj, 3 cams)": lambda: seg.segment_objects(ego, masks, targets),
        f"segment_objects ({objects} obj, 3 cams), features one by one":
            lambda: one_by_one.segment_objects(ego, masks, targets),
    }


def stage_flop_map(f: Dict[str, int], points: int, objects: int) -> Dict[str, int]:
    whole = (f["backbone_3"] + objects * (f["tracker_3"] + f["backbone_3"] + f["encode"] + f["decode"] + f["refine"]))
    return {
        "first pass": f["backbone_3"],
        "tracker": f["tracker_3"],
        "features pass": f["backbone_3"],
        "features x": objects * f["backbone_3"],
        "head encode": f["encode"],
        "head decode": f["decode"],
        "head refine": f["refine"],
        "segment_objects": whole,
    }


def flops_for(stage: str, fm: Dict[str, int]) -> int:
    for key, v in fm.items():
        if stage.startswith(key):
            return v
    raise KeyError(stage)


# ---------------------------------------------------------------------------------------
def measure(mode: str, stage: str, fn: Callable, is_whole: bool, device: torch.device, args,
            fm: Dict[str, int], peak: Optional[float]) -> dict:
    """Warm up, optionally compile / capture, time ``fn``; one table row."""
    call, note = fn, ""
    if args.compile and not is_whole:
        call = torch.compile(fn, dynamic=False)
        note = "compiled"
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        call()
    _sync(device)
    if args.cuda_graphs and device.type == "cuda" and not is_whole:
        try:
            call = graph_capture(call, device)
            note = (note + "+graph").lstrip("+")
        except Exception as exc:  # noqa: BLE001 - reported, timed eagerly
            text = str(exc).strip()
            first = text.splitlines()[0][:80] if text else type(exc).__name__
            note = (note + f"+graph failed: {first}").lstrip("+")
            torch.cuda.synchronize(device)
    times = time_call(call, device, args.repeats)
    lat = statistics.median(times)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    fl = flops_for(stage, fm)
    tflops = fl / lat / 1e12
    return dict(mode=mode, stage=stage, latency_s=lat, min_s=min(times), gflop=fl / 1e9, tflops=tflops,
                peak_tflops=peak, pct_peak=100 * tflops / peak if peak else None, peak_mem_gib=mem, note=note)


def run(args) -> List[dict]:
    device = torch.device(args.device)
    preset_name = "dry-run" if args.dry_run else "vggt-1b"
    t0 = time.perf_counter()
    p, seg = build(preset_name, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peaks = device_peaks(name) if args.peak_tflops is None else None
    print(f"torch {torch.__version__}, device {name}, preset {preset_name} ({p.image_size} px), "
          f"threads {torch.get_num_threads()}, built in {time.perf_counter() - t0:.1f} s")
    if args.peak_tflops is not None:
        print(f"peak given: {args.peak_tflops} TFLOP/s for every mode")
    elif peaks:
        print(f"dense peaks (TFLOP/s): bf16 {peaks[0]}, tf32 {peaks[1]}, fp32 {peaks[2]}")
    else:
        print("no known peak for this device (use --peak-tflops): % of peak not shown")
    fm = stage_flop_map(stage_flops(p, views=3, targets=2, points=args.points), args.points, args.objects)

    rows = []
    with torch.inference_mode():
        for mode in args.modes:
            why = mode_runs_on(mode, device)
            if why:
                print(f"\n[{mode}] skipped: {why}")
                continue
            peak = args.peak_tflops if args.peak_tflops is not None else mode_peak(peaks, mode)
            setup = ModeSetup(mode, device, seg)
            with setup.active():
                stages = make_stages(seg, p.image_size, args.points, device, args.objects, setup)
                if setup.head_autocast:
                    print(f"[{mode}] segment_objects runs its head without autocast (the pipeline has no "
                          "precision setting yet); the head rows have it")
                for stage, fn in stages.items():
                    if args.only and not any(key in stage for key in args.only):
                        continue
                    is_whole = stage.startswith("segment_objects")
                    try:
                        rows.append(measure(mode, stage, fn, is_whole, device, args, fm, peak))
                    except Exception as exc:  # noqa: BLE001 - one broken stage must not hide the others
                        rows.append(dict(mode=mode, stage=stage, error=f"{type(exc).__name__}: {exc}"[:300]))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return rows


def print_table(rows: List[dict]) -> None:
    header = (f"{'mode':<8} {'stage':<36} {'latency ms':>11} {'GFLOP':>9} {'TFLOP/s':>9} {'% peak':>7} "
              f"{'peak GiB':>9}  note")
    print("\n" + header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['mode']:<8} {r['stage']:<36} FAILED {r['error']}")
            continue
        pct = f"{r['pct_peak']:7.1f}" if r["pct_peak"] is not None else f"{'n/a':>7}"
        mem = f"{r['peak_mem_gib']:9.2f}" if r["peak_mem_gib"] is not None else f"{'n/a':>9}"
        print(f"{r['mode']:<8} {r['stage']:<36} {1e3 * r['latency_s']:11.2f} {r['gflop']:9.1f} "
              f"{r['tflops']:9.3f} {pct} {mem}  {r['note']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--compile", action="store_true", help="torch.compile each stage")
    ap.add_argument("--cuda-graphs", action="store_true", help="capture each stage into a CUDA graph")
    ap.add_argument("--objects", type=int, default=1, help="objects in the segment_objects row")
    ap.add_argument("--points", type=int, default=50, help="tracker query points")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--peak-tflops", type=float, default=None, help="override the device's peak (all modes)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    ap.add_argument("--only", nargs="+", default=None,
                    help="run only the stages whose name contains one of these strings (e.g. 'features x')")
    ap.add_argument("--dry-run", action="store_true",
                    help="70 px network on CPU, 1 iteration, no warm-up (checks the script runs)")
    args = ap.parse_args(argv)
    if args.objects < 1:
        ap.error("--objects must be >= 1")
    if args.dry_run:
        args.device = args.device or "cpu"
        args.repeats, args.warmup = 1, 0
        args.compile = False
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda asked for but CUDA is not available")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rows = run(args)
    failed = [r for r in rows if "error" in r]
    if failed:
        print(f"\n{len(failed)} stage(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
