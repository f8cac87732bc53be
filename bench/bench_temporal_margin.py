"""How reliable is the margin test of Temporal VGGT-S? Its exact setup
(``margin_run`` in ``test/training/test_temporal_training.py``: stage-A per-frame head on clips,
memory modules trained on that frozen head, ``vggts evaluate --clips``) over seeds and
CPU instruction sets (other CPUs give other float32 bits, and training amplifies them).

    .venv/bin/python bench/bench_temporal_margin.py --seeds 0 1 2 3 4 5 --isa native avx2 default

One child process per (seed, ISA), 1 thread each, ``--jobs`` at a time; ``avx2`` sets
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``,
``default`` sets ``ATEN_CPU_CAPABILITY=default`` (no vector kernels). Prints per run the
occluded and overall IoU of both arms, the margin and the CPU seconds (user + system).

``--plain-continued`` adds the same-budget plain arm: after the test's run, the stage-A
head goes on training alone (no memory) for stage B's epochs, schedule, seed and batches;
a second ``vggts evaluate --clips`` scores it (``--head-checkpoint``) against the same
temporal model (``--temporal-head`` the frozen stage-A head), so each run reports the
stage-A head, the continued head and the temporal model on the same held-out clips.
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


def continued_plain(mod, base: Path, seed: int, stage_b: int = 12) -> dict:
    """Train the stage-A head on for stage B's budget without memory, then evaluate it
    against the temporal model of ``margin_run`` (same clips): the evaluation JSON."""
    from vggts_ros.cli import main as vggts_main
    from vggts_ros.training.temporal_train import ClipTrainer, smoke_temporal_config

    train = str(base / "train")
    stage_a = base / "plain" / "head.pth"
    common = dict(mod.CLIP_SETTINGS, **{"run.seed": seed, "run.feature_cache": str(base / "cache")})
    cfg = smoke_temporal_config(str(base / "continued"), train, use_memory=False, overrides=dict(
        common, **{"optim.epochs": stage_b, "optim.lr_drops": [stage_b - 2], "model.init_head": str(stage_a)}))
    ClipTrainer(cfg).fit()
    rc = vggts_main(["evaluate", "--clips", "--temporal-weights", str(base / "temporal"),
                     "--temporal-head", str(stage_a), "--head-checkpoint", str(base / "continued" / "head.pth"),
                     "--data-root", str(base / "val"), "--seed", "1000", "--out", str(base / "eval_continued")])
    assert rc == 0
    return json.loads((base / "eval_continued" / "eval.json").read_text())


def child(seed: int, out: str, continued: bool = False) -> None:
    """One margin run in this process; prints one JSON line."""
    import importlib.util

    import torch

    sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("margin_test", ROOT / "test" / "training" / "test_temporal_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    report = mod.margin_run(Path(out), seed=seed)
    s = report["summary"]
    record = {"seed": seed, "isa": torch.backends.cpu.get_cpu_capability(),
              "plain": s["plain"], "temporal": s["temporal"],
              "margin_occluded": s["temporal"]["occluded"]["iou"] - s["plain"]["occluded"]["iou"],
              "margin_overall": s["temporal"]["overall"]["iou"] - s["plain"]["overall"]["iou"],
              "threshold": mod.MARGIN}
    if continued:
        c = continued_plain(mod, Path(out), seed)["summary"]
        record.update(continued=c["plain"], temporal_again=c["temporal"],
                      margin_continued_occluded=s["temporal"]["occluded"]["iou"] - c["plain"]["occluded"]["iou"],
                      margin_continued_overall=s["temporal"]["overall"]["iou"] - c["plain"]["overall"]["iou"])
    use = resource.getrusage(resource.RUSAGE_SELF)
    record.update(wall_s=time.perf_counter() - t0, cpu_s=use.ru_utime + use.ru_stime)
    print(json.dumps(record), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    p.add_argument("--isa", nargs="+", choices=sorted(ISA_ENV), default=["native"])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--json", help="write every run's record here")
    p.add_argument("--plain-continued", action="store_true",
                   help="also train and score the same-budget plain arm (stage-A head trained on for stage B)")
    p.add_argument("--child", nargs=2, metavar=("SEED", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(int(a.child[0]), a.child[1], a.plain_continued)
        return
    base = Path(tempfile.mkdtemp(prefix="vggts_margin_"))
    todo = [(seed, isa) for isa in a.isa for seed in a.seeds]
    running, results = [], []
    while todo or running:
        while todo and len(running) < a.jobs:
            seed, isa = todo.pop(0)
            env = dict(os.environ, OMP_NUM_THREADS="1", **ISA_ENV[isa])
            cmd = [sys.executable, __file__, "--child", str(seed), str(base / f"{isa}_{seed}")]
            cmd += ["--plain-continued"] if a.plain_continued else []
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
            if "continued" in r:
                c, t2 = r["continued"], r["temporal_again"]
                print(f"    same budget: occluded continued {c['occluded']['iou']:.3f} (temporal margin "
                      f"{r['margin_continued_occluded']:+.3f}); overall continued {c['overall']['iou']:.3f} "
                      f"({r['margin_continued_overall']:+.3f}); temporal re-scored occluded "
                      f"{t2['occluded']['iou']:.3f} overall {t2['overall']['iou']:.3f}", flush=True)
        time.sleep(1.0)
    if results:
        low = min(r["margin_occluded"] for r in results)
        print(f"lowest occluded-frame margin {low:+.3f} over {len(results)} runs; the test asserts "
              f">= {results[0]['threshold']}")
        same = [r["margin_continued_occluded"] for r in results if "continued" in r]
        if same:
            print(f"same budget (continued plain head): occluded-frame margins "
                  f"{' '.join(f'{m:+.3f}' for m in same)}, lowest {min(same):+.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
