"""How reliable is the margin test of Temporal VGGT-S? Its exact setup
(``margin_run`` in ``test/test_temporal_training.py``: stage-A per-frame head on clips,
memory modules trained on that frozen head, ``vggts evaluate --clips``) over seeds and
CPU instruction sets (other CPUs give other float32 bits, and training amplifies them).

    .venv/bin/python bench/bench_temporal_margin.py --seeds 0 1 2 3 4 5 --isa native avx2 default

One child process per (seed, ISA), 1 thread each, ``--jobs`` at a time; ``avx2`` sets
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``,
``default`` sets ``ATEN_CPU_CAPABILITY=default`` (no vector kernels). Prints per run the
occluded and overall IoU of both arms, the margin and the CPU seconds (user + system).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ISA_ENV = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                  "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
           "default": {"ATEN_CPU_CAPABILITY": "default"}}


def child(seed: int, out: str) -> None:
    """One margin run in this process; prints one JSON line."""
    import importlib.util

    import torch

    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("margin_test", ROOT / "test" / "test_temporal_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = mod.margin_run(Path(out), seed=seed)
    use = resource.getrusage(resource.RUSAGE_SELF)
    s = report["summary"]
    print(json.dumps({"seed": seed, "isa": torch.backends.cpu.get_cpu_capability(),
                      "plain": s["plain"], "temporal": s["temporal"],
                      "margin_occluded": s["temporal"]["occluded"]["iou"] - s["plain"]["occluded"]["iou"],
                      "margin_overall": s["temporal"]["overall"]["iou"] - s["plain"]["overall"]["iou"],
                      "wall_s": time.perf_counter() - t0, "cpu_s": use.ru_utime + use.ru_stime,
                      "threshold": mod.MARGIN}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--isa", nargs="+", choices=sorted(ISA_ENV), default=["native"])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", help="write every run's record here")
    p.add_argument("--child", nargs=2, metavar=("SEED", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(int(a.child[0]), a.child[1])
        return
    base = Path(tempfile.mkdtemp(prefix="vggts_margin_"))
    todo = [(seed, isa) for isa in a.isa for seed in a.seeds]
    running, results = [], []
    while todo or running:
        while todo and len(running) < a.jobs:
            seed, isa = todo.pop(0)
            env = dict(os.environ, OMP_NUM_THREADS="1", **ISA_ENV[isa])
            cmd = [sys.executable, __file__, "--child", str(seed), str(base / f"{isa}_{seed}")]
            running.append((seed, isa, subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)))
        for item in list(running):
            seed, isa, proc = item
            if proc.poll() is None:
                continue
            running.remove(item)
            lines = [line for line in proc.stdout.read().splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(f"seed {seed} {isa}: failed (exit {proc.returncode})", flush=True)
                continue
            r = json.loads(lines[-1])
            r["isa_asked"] = isa
            results.append(r)
            print(f"seed {seed} {isa:7s} ({r['isa']}): occluded plain {r['plain']['occluded']['iou']:.3f} "
                  f"temporal {r['temporal']['occluded']['iou']:.3f} (margin {r['margin_occluded']:+.3f}, "
                  f"{r['plain']['occluded']['frames']} frames); overall plain {r['plain']['overall']['iou']:.3f} "
                  f"temporal {r['temporal']['overall']['iou']:.3f} ({r['margin_overall']:+.3f}); "
                  f"cpu {r['cpu_s']:.0f} s", flush=True)
        time.sleep(1.0)
    if results:
        low = min(r["margin_occluded"] for r in results)
        print(f"lowest occluded-frame margin {low:+.3f} over {len(results)} runs; the test asserts "
              f">= {results[0]['threshold']}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
