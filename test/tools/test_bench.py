"""The benchmark scripts keep running: the GPU benchmark's CPU dry run (same code path as
on a GPU, tiny network) and the FLOP accounting docs/measurements.md's latency floors rest on."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

STAGES = ("first pass", "tracker", "features pass", "features x1 one call per object", "features x1 one batched call",
          "head encode", "head decode", "head refine", "segment_objects", "segment_objects")


def test_bench_gpu_dry_run_prints_a_sane_table(tmp_path):
    out = tmp_path / "rows.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_gpu.py"), "--dry-run", "--json", str(out)],
        capture_output=True, text=True, timeout=300, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[tf32] skipped" in proc.stdout  # CUDA-only mode is named, not silently dropped
    rows = json.loads(out.read_text())
    assert not [r for r in rows if "error" in r]
    by_mode = {}
    for r in rows:
        by_mode.setdefault(r["mode"], []).append(r)
    assert set(by_mode) == {"float32", "bf16", "release"}
    for mode, mode_rows in by_mode.items():
        names = [r["stage"] for r in mode_rows]
        expected = STAGES if mode != "release" or len(names) == len(STAGES) else STAGES[:-2]
        assert [n.split(" (")[0] for n in names] == list(expected), names
        for r in mode_rows:
            for key in ("latency_s", "gflop", "tflops"):
                assert math.isfinite(r[key]) and r[key] > 0, (mode, r["stage"], key, r[key])
            assert r["tflops"] == pytest.approx(r["gflop"] / 1e3 / r["latency_s"], rel=1e-6)
            assert r["peak_mem_gib"] is None and r["pct_peak"] is None  # CPU: no peak known
            # every printed row is in the table
            assert f"{r['mode']:<8} {r['stage']:<36}" in proc.stdout
    # FLOPs do not depend on the precision mode; the whole set is the sum of its stages
    f32 = {r["stage"].split(" (")[0]: r["gflop"] for r in by_mode["float32"]}
    for r in by_mode["bf16"]:
        assert r["gflop"] == f32[r["stage"].split(" (")[0]]
    assert f32["features x1 one call per object"] == f32["features x1 one batched call"] == f32["features pass"]
    whole = f32["first pass"] + f32["tracker"] + f32["features pass"] + f32["head encode"] + f32["head decode"] \
        + f32["head refine"]
    assert f32["segment_objects"] == pytest.approx(whole, rel=1e-9)


def test_set_flops_schedules():
    from bench.bench_gpu import dry_run_preset
    from bench.flops import set_flops, stage_flops

    f = stage_flops(dry_run_preset(), views=3, targets=2, points=50)
    assert f["backbone_3"] > f["backbone_2"] > 0 and f["tracker_3"] > f["tracker_2"] > 0
    # the head batched over 2 targets costs two single pairs (encode: its positional
    # encodings do not depend on the batch)
    for k in ("decode", "refine"):
        assert f[k] == pytest.approx(2 * f[k + "_pair"], rel=1e-6)
    assert f["encode_pair"] < f["encode"] < 2 * f["encode_pair"]
    one, four = set_flops(f, 3, 1), set_flops(f, 3, 4)
    # pairwise reference: 2 backbone passes over 2 views per (object, target)
    assert one["reference_first_backbone"] == 2 * f["backbone_2"]
    assert four["reference_total"] == pytest.approx(4 * one["reference_total"])
    # ours: the first pass is shared by all objects, the rest scales with them
    assert four["ours_first_backbone"] == one["ours_first_backbone"]
    assert four["ours_total"] - one["ours_total"] == pytest.approx(3 * (one["ours_total"] - f["backbone_3"]))
    assert four["ours_total"] < four["reference_total"]


def test_peak_table_picks_the_right_card():
    from bench.bench_gpu import device_peaks, mode_peak

    assert device_peaks("NVIDIA H100 80GB HBM3")[0] == pytest.approx(989.4)
    assert device_peaks("NVIDIA H100 PCIe")[0] == pytest.approx(756.0)
    assert device_peaks("NVIDIA GeForce RTX 4090")[1] == pytest.approx(82.6)
    assert device_peaks("Orin (nvgpu)")[0] == pytest.approx(42.5)
    assert device_peaks("Some Unknown Card") is None
    peaks = device_peaks("NVIDIA H100 80GB HBM3")
    assert (mode_peak(peaks, "float32"), mode_peak(peaks, "tf32"), mode_peak(peaks, "release")) == (
        peaks[2], peaks[1], peaks[0])


def test_bench_vs_reference_names_what_is_missing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("REF_VGGT", "REF_VGGTS")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), REF_VGGTS=str(tmp_path))  # a directory, but not VGGT-S
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_vs_reference.py"), "--quick"],
                          capture_output=True, text=True, timeout=120, env=env, cwd=str(ROOT))
    assert proc.returncode != 0
    assert "REF_VGGT=None is not a VGGT checkout" in proc.stderr
    assert f"REF_VGGTS={str(tmp_path)!r} is not a VGGT-S checkout" in proc.stderr


def test_bench_geometry_heads_quick(tmp_path):
    """The geometry heads' cost benchmark runs on the test-tiny network, its set is
    bench/flops.py's set, and its shares are its own figures' ratios."""
    from bench.bench_geometry_heads import geometry_preset
    from bench.flops import set_flops, stage_flops

    out = tmp_path / "heads.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_geometry_heads.py"), "--quick", "--repeats", "1",
         "--objects", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["preset"] == "test-tiny" and r["views"] == 3 and r["objects"] == 2 and r["passes_per_set"] == 3
    f = stage_flops(geometry_preset(True), views=3, targets=2)
    assert r["flops"]["set"] == set_flops(f, cameras=3, objects=2)["ours_total"]
    assert r["flops"]["backbone_pass"] == f["backbone_3"]
    assert r["flops"]["set"] == sum(r["flops"]["set_parts"].values())
    assert r["set_cpu_s"] == pytest.approx(3 * r["cpu_s"]["backbone_pass"])
    for key in ("camera_head", "depth_head"):
        assert r["flops"][key] > 0 and r["cpu_s"][key] > 0
        assert r["share"][key]["flops"] == pytest.approx(r["flops"][key] / r["flops"]["set"])
        assert r["share"][key]["cpu"] == pytest.approx(r["cpu_s"][key] / r["set_cpu_s"])
    # the depth head decodes every pixel; the camera head reads one token per view
    assert r["flops"]["depth_head"] > 100 * r["flops"]["camera_head"]
    assert "set CPU time = 3 passes x" in proc.stdout
