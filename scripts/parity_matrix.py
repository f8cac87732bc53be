"""Run the parity suite on every reference fixture set under several CPU instruction sets.

    python scripts/parity_matrix.py [--sets reference reference_seed1 reference_seed2]
                                    [--isa native avx2 sse42] [--log-dir DIR] [--files ...]

One pytest process per (fixture set, instruction-set setting), ``VGGTS_REFERENCE_DIR``
selecting the set (``test/fixtures/<name>``) and the environment variables below the
instruction sets PyTorch, oneDNN and MKL may use; prints a markdown table of passed /
failed / skipped counts and CPU minutes per cell, and leaves each cell's pytest output in
``--log-dir``. Exit status 1 when any cell failed.

Instruction-set settings (what issue 19 names):

* ``native``: whatever this CPU has;
* ``avx2``: ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2``;
* ``sse42``: ``ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2``.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "test" / "fixtures"
PARITY_FILES = sorted(str(p.relative_to(REPO)) for p in (REPO / "test" / "core").glob("test_*parity*.py")) + [
    "test/core/test_pipeline_exo2ego.py"
]
ISA = {
    "native": {},
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "sse42": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}
ISA_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def counts(output: str) -> dict:
    """``{"passed": n, "failed": n, ...}`` from pytest's closing summary line."""
    lines = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    found = dict.fromkeys(("passed", "failed", "skipped", "error"), 0)
    if lines:
        for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", lines[-1]):
            found["error" if kind.startswith("error") else kind] = int(n)
    return found


def run_cell(set_name: str, isa: str, files, log_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ISA_VARS}
    env.update(ISA[isa], VGGTS_REFERENCE_DIR=str(FIXTURES / set_name), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *files]
    before = os.times()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    out = proc.stdout + proc.stderr
    (log_dir / f"{set_name}__{isa}.log").write_text(out)
    c = counts(out)
    failed = [line for line in out.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return dict(rc=proc.returncode, wall=wall, cpu=cpu, failures=failed, **c)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+",
                    default=["reference"] + sorted(p.name for p in FIXTURES.glob("reference_seed*")))
    ap.add_argument("--isa", nargs="+", default=list(ISA), choices=list(ISA))
    ap.add_argument("--files", nargs="+", default=PARITY_FILES)
    ap.add_argument("--log-dir", default="parity_matrix_logs")
    args = ap.parse_args(argv)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    missing = [s for s in args.sets if not (FIXTURES / s).is_dir()]
    if missing:
        sys.exit(f"no fixture set {', '.join(missing)} under {FIXTURES}")
    results = {}
    for s in args.sets:
        for isa in args.isa:
            r = run_cell(s, isa, args.files, log_dir)
            results[(s, isa)] = r
            print(f"{s} / {isa}: {r['passed']} passed, {r['failed']} failed, {r['error']} errors, "
                  f"{r['skipped']} skipped, {r['cpu'] / 60:.1f} CPU min, {r['wall'] / 60:.1f} min wall", flush=True)
            for line in r["failures"]:
                print("    " + line, flush=True)
    print("\n| fixture set | " + " | ".join(args.isa) + " |")
    print("| --- |" + " --- |" * len(args.isa))
    for s in args.sets:
        cells = []
        for isa in args.isa:
            r = results[(s, isa)]
            verdict = "pass" if r["rc"] == 0 else "FAIL"
            cells.append(f"{verdict}: {r['passed']} passed, {r['failed'] + r['error']} failed "
                         f"({r['cpu'] / 60:.0f} CPU min)")
        print(f"| {s} | " + " | ".join(cells) + " |")
    print(f"\nfiles: {' '.join(args.files)}")
    return 0 if all(r["rc"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
