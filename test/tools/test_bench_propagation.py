"""``bench/bench_propagation.py`` keeps running (tiny sizes): the per-step cost and the
simulated-clock stream with its three arms write sane figures."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(tmp_path, *args):
    out = tmp_path / "figures.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_propagation.py"), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=str(ROOT))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_cost_figures(tmp_path):
    figures, stdout = run(tmp_path, "cost", "--seeds", "0", "--frames", "4")
    assert set(figures) == {f"{k}_{c}" for k in ("shared", "alone", "catch") for c in ("wall", "cpu")}
    for key, row in figures.items():
        assert row["n"] > 0 and 0 < row["median"] <= row["p95"] < 1000, (key, row)
    assert "3 objects sharing a camera's update" in stdout


def test_stream_arms(tmp_path):
    figures, stdout = run(tmp_path, "stream", "--seeds", "0", "--duration", "0.6")
    arms = figures["moving:0@10hz/0.6s"]
    assert {"offline", "propagation on", "propagation off"} <= set(arms)
    assert arms["offline"]["published_pair_mean"] == 1.0 and arms["offline"]["age_median_ms"] == 0.0
    on = arms["propagation on"]
    # propagation publishes on (nearly) every frame, each right away
    assert on["published_target_min"] >= 0.8 and on["age_median_ms"] < 150
    for arm in arms.values():
        if isinstance(arm, dict):
            assert 0.0 <= arm["iou_held"] <= 1.0 and math.isfinite(arm["iou_held"])
    assert "mean over seeds" in stdout
