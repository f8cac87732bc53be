"""The parity tests can fail: for every reference fixture file, a copy whose reference
*outputs* are perturbed slightly (1% of their range; +-8 grey levels on images; a block
of flipped pixels on masks; +1 on integers) must make the tests that read that file fail.

One pytest child process per fixture file, run with ``VGGTS_REFERENCE_DIR`` pointing at a
copy of the fixture directory in which only that file is perturbed, ``-x`` so it stops at
the first failure. Inputs (images and masks given to the model, seeds, shapes, configs,
weight fingerprints, sample indices) are left alone, so what fails is a comparison with a
reference output, not the setup.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT, fixture_path, reference_dir

HERE = Path(__file__).resolve().parent

# Never perturbed: what the model is given or how it is built.
COMMON_INPUTS = {
    "config", "note", "weight_seed", "head_weight_seed", "weight_sums", "head_weight_sums", "image_seed",
    "query_seed", "feat_seed", "feat_shape", "feature_shape", "feature_sample_index", "query_points",
}  # fmt: skip
INPUTS = {
    "vggt_track_tiny.pt": set(),
    "aggregator_dinov2.pt": {"S", "H", "W"},
    "vggts_head.pt": {"src_points", "tar_points", "src_masks"},
    "prompts.pt": {"masks", "outlier_input", "image", "mask", "points", "logits", "R", "feat", "img_hw"},
    "pipeline_ego2exo.pt": {"ego_image", "ego_mask", "exo_image", "exo_mask"},
    "pipeline_exo2ego.pt": {"ego_image", "ego_mask", "exo_image", "exo_mask"},
    "vggt_geometry_tiny.pt": {"frames"},
}

# Which tests read which file: (test file glob, -k expression or None). The pipeline test
# files are another module's; they are selected by name and keyword.
SELECTIONS = {
    "vggt_track_tiny.pt": [("test_backbone_parity.py", "track_coords or track_features or tokens")],
    "aggregator_dinov2.pt": [("test_backbone_parity.py", "aggregator")],
    "vggts_head.pt": [("test_head_parity.py", "src_points_feat or pass0 or pass1 or float64")],
    "prompts.pt": [("test_prompts_parity.py", "not pipeline")],
    "pipeline_ego2exo.pt": [("test_pipeline_parity.py", "not exo2ego"), ("test_prompts_parity.py", "pipeline")],
    "pipeline_exo2ego.pt": [("test_pipeline*.py", "exo2ego")],
    "vggt_geometry_tiny.pt": [("test_geometry_heads_parity.py", None)],
}


def _perturb(value, key: str, inputs: set):
    """A copy of ``value`` with every reference output nudged (recursively)."""
    if key in COMMON_INPUTS or key in inputs:
        return value
    if isinstance(value, dict):
        return {k: _perturb(v, str(k), inputs) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_perturb(v, key, inputs) for v in value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value + 0.01 * max(1.0, abs(value))
    if not torch.is_tensor(value) or value.numel() == 0:
        return value
    if value.is_floating_point():
        return value + 0.01 * max(1.0, value.abs().max().item())
    if value.dtype == torch.uint8 and value.max() > 1:  # an image
        return (value.to(torch.int16) + torch.where(value < 128, 8, -8)).to(torch.uint8)
    if value.dtype in (torch.uint8, torch.bool) and value.dim() >= 2:  # a binary mask: flip a block
        out = value.clone()
        h, w = out.shape[-2:]
        bh, bw = max(1, h // 4), max(1, w // 4)
        block = out[..., h // 2 - bh // 2 : h // 2 - bh // 2 + bh, w // 2 - bw // 2 : w // 2 - bw // 2 + bw]
        block.copy_(1 - block if value.dtype == torch.uint8 else ~block)
        return out
    return value + 1


def _selection(name: str):
    """``(test files, -k expression)`` pairs that exist in this checkout."""
    out = []
    for pattern, keyword in SELECTIONS[name]:
        files = sorted(str(p.relative_to(REPO_ROOT)) for p in HERE.glob(pattern) if p.name != Path(__file__).name)
        if files:
            out.append((files, keyword))
    return out


def _pytest(args, env, timeout=900):
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args]
    return subprocess.run(cmd, cwd=str(REPO_ROOT), env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_perturbed_reference_outputs_fail(name, tmp_path):
    src = reference_dir()
    if not fixture_path(name).is_file():
        pytest.fail(f"reference fixture {fixture_path(name)} is missing")
    copy = tmp_path / "reference"
    shutil.copytree(src, copy)
    data = torch.load(str(fixture_path(name)), map_location="cpu", weights_only=False)
    torch.save(_perturb(data, "", INPUTS[name]), str(copy / name))

    env = dict(os.environ, VGGTS_REFERENCE_DIR=str(copy), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    ran = []
    for files, keyword in _selection(name):
        args = files + (["-k", keyword] if keyword else [])
        run = _pytest(["-x", "-rf", *args], env)
        if run.returncode == 5:  # the keyword selects nothing in these files (yet)
            continue
        ran.append((args, run.stdout[-3000:]))
        failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
        if run.returncode == 1 and failed:
            print(f"{name}: {failed[0]}")
            return  # a comparison with the perturbed reference failed, as it must
        assert run.returncode in (0, 1), f"{' '.join(args)}: pytest exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
    if not ran:
        print(f"{name}: no parity test selects this file yet ({SELECTIONS[name]}); nothing to check")
        pytest.skip(f"no test in this checkout reads {name} (selection {SELECTIONS[name]})")
    pytest.fail(f"no parity test failed on a perturbed copy of {name}: " + "\n".join(f"{a}: {o}" for a, o in ran))


def test_perturbation_changes_only_outputs():
    """The perturbation itself: outputs move by at least the documented amount, inputs stay."""
    fx = {
        "config": {"a": 1},
        "weight_sums": {"k": 1.0},
        "src_points": torch.ones(2, 2),
        "pass0_pred": torch.zeros(3),
        "coord_preds": [torch.full((2,), 300.0)],
        "final_mask": torch.zeros(8, 8, dtype=torch.uint8),
        "crop_size": 10,
    }
    out = _perturb(fx, "", INPUTS["vggts_head.pt"])
    assert out["config"] == fx["config"] and out["weight_sums"] == fx["weight_sums"]
    assert torch.equal(out["src_points"], fx["src_points"])
    assert math.isclose(float(out["pass0_pred"][0]), 0.01, rel_tol=1e-6)
    assert math.isclose(float(out["coord_preds"][0][0]), 303.0)
    assert int(out["final_mask"].sum()) == 4 and out["crop_size"] == 11
