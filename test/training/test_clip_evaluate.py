"""``vggts evaluate --clips``: the per-frame head against Temporal VGGT-S on synthetic
occlusion clips, through the command line, checked against ``evaluate_clips`` called
directly on the same weights and clips; zero gates score exactly the plain head, opened
gates do not; bad inputs exit with code 2 and say what is wrong."""

import json

import pytest
import torch

from vggts_ros.checkpoint import save_state_dict
from vggts_ros.cli import main as vggts_main
from vggts_ros.models.temporal import TemporalConfig, TemporalMemory, save_temporal
from vggts_ros.models.union_head import UnionSegmentationHead
from vggts_ros.training.clip_eval import GROUPS, evaluate_clips
from vggts_ros.training.clips import ImageClips
from vggts_ros.training.config import smoke_head
from vggts_ros.training.runtime import FeatureExtractor, build_backbone
from vggts_ros.training.temporal_train import TemporalTrainConfig, smoke_temporal_config
from vggts_ros.training.toydata import write_shapes_dataset

SIZE = 56
TCFG = TemporalConfig(memory_frames=2, tokens=14, blocks=1, num_heads=1)


def _head(seed):
    torch.manual_seed(seed)
    return UnionSegmentationHead(smoke_head(SIZE)).eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Held-out shapes (4 clips), a plain head, a temporal file with its gates still zero,
    and a 'trained' temporal run directory: opened gates, its own head, its config."""
    base = tmp_path_factory.mktemp("clip_eval")
    val = write_shapes_dataset(str(base / "val"), n_images=2, n_objects=2, seed=2, background="plain")["root"]
    plain = _head(0)
    save_state_dict(plain.state_dict(), base / "plain_head.pth", wrap="model")

    zero = base / "zero"
    zero.mkdir()
    save_temporal(TemporalMemory.seeded(smoke_head(SIZE), TCFG, 0), zero / "temporal.pth")

    run = base / "run"
    run.mkdir()
    tm = TemporalMemory.seeded(smoke_head(SIZE), TCFG, 1)
    with torch.no_grad():
        tm.gate.fill_(0.5)
        tm.logit_gate.fill_(3.0)
    save_temporal(tm, run / "temporal.pth")
    save_state_dict(_head(1).state_dict(), run / "head.pth", wrap="model")
    cfg = smoke_temporal_config(str(run), "/nonexistent/train", overrides={
        "model.img_size": SIZE, "clips.frames": 4, "clips.truth": "amodal", "temporal.memory_frames": 2,
        "temporal.tokens": 14, "temporal.blocks": 1, "temporal.num_heads": 1,
        "eval_data.root": val, "eval_data.fixed_pairs": True, "eval_data.adaptive_prompts": "warp",
        "eval_data.first_pass_points": 20, "eval_data.outlier_k": 4, "eval_data.seed": 7})
    cfg.save(str(run / "config.json"))
    return {"base": base, "val": val, "zero": zero, "run": run, "cfg": cfg}


SMOKE = ["--preset", "smoke", "--img-size", str(SIZE), "--vggt-checkpoint", "none", "--device", "cpu"]


def _evaluate(args, out):
    rc = vggts_main(["evaluate", "--clips", *args, "--out", str(out)])
    assert rc == 0
    return json.loads((out / "eval.json").read_text()), (out / "eval.md").read_text()


def _direct(cfg: TemporalTrainConfig, head, temporal):
    backbone = build_backbone(cfg.base.model, torch.device("cpu"))
    clips = ImageClips(cfg.base.eval_data, cfg.clips, SIZE)
    return evaluate_clips(head, temporal, clips, FeatureExtractor(backbone, torch.device("cpu")), 1)


def test_cli_scores_a_temporal_run_like_evaluate_clips(world, capsys):
    base, run = world["base"], world["run"]
    report, table = _evaluate(["--temporal-weights", str(run), "--head-checkpoint", str(base / "plain_head.pth"),
                               "--memory-off", "--device", "cpu"], base / "out_run")
    printed = capsys.readouterr()
    assert "config.json" in printed.err  # the run's model, clip and data settings were used
    assert list(report["summary"]) == ["plain", "temporal", "temporal, memory off"]
    frames = report["frames"]
    assert len(frames["plain"]) == 4 * 4  # 4 clips of 4 frames (the run's clips.frames)
    n_occ = sum(f["occlusion"] > 0.5 for f in frames["plain"])
    assert report["summary"]["plain"]["occluded"]["frames"] == n_occ

    from vggts_ros.models.temporal import load_temporal

    cfg = world["cfg"]
    temporal = load_temporal(run / "temporal.pth", smoke_head(SIZE))
    expected = {"plain": _direct(cfg, _load(base / "plain_head.pth"), None),
                "temporal": _direct(cfg, _load(run / "head.pth"), temporal),
                "temporal, memory off": _direct(cfg, _load(run / "head.pth"), None)}
    for arm, direct in expected.items():
        assert [f["iou"] for f in frames[arm]] == [f["iou"] for f in direct["frames"]], arm
        assert [(f["clip"], f["frame"]) for f in frames[arm]] == [(f["clip"], f["frame"]) for f in direct["frames"]]
        for g in GROUPS:
            got, want = report["summary"][arm][g], direct["summary"][g]
            assert got["frames"] == want["frames"]
            assert (got["iou"] is None and want["iou"] != want["iou"]) or got["iou"] == want["iou"]
    # opened gates change the temporal arm's masks: not the plain numbers, nor its memory-off ones
    assert [f["iou"] for f in frames["temporal"]] != [f["iou"] for f in frames["temporal, memory off"]]
    # the table: one row per arm, IoU (frames) per group, as printed
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split("|")[1].strip() for r in rows] == list(report["summary"])
    s = report["summary"]["temporal"]
    assert f"{s['overall']['iou']:.4f} ({s['overall']['frames']})" in rows[1]
    assert table.strip() in printed.out


def _load(path):
    head = UnionSegmentationHead(smoke_head(SIZE))
    head.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True)["model"])
    return head.eval()


def test_zero_gates_score_exactly_the_plain_head(world):
    base = world["base"]
    report, _ = _evaluate([*SMOKE, "--data", "self", "--data-root", world["val"], "--head-checkpoint",
                           str(base / "plain_head.pth"), "--temporal-weights", str(world["zero"] / "temporal.pth"),
                           "--frames", "3", "--truth", "amodal", "--seed", "5"], base / "out_zero")
    plain, temporal = report["frames"]["plain"], report["frames"]["temporal"]
    assert len(plain) == 4 * 3 and any(f["iou"] > 0 for f in plain)
    assert [f["iou"] for f in temporal] == [f["iou"] for f in plain]
    assert report["summary"]["temporal"] == report["summary"]["plain"]
    assert report["settings"]["temporal_head"] == str(base / "plain_head.pth")  # no head.pth beside it
    assert report["settings"]["clips"]["truth"] == "amodal" and report["settings"]["data"]["seed"] == 5


def test_bad_inputs_exit_2_naming_the_problem(world, tmp_path, capsys):
    base, run = world["base"], world["run"]
    common = [*SMOKE, "--data", "self", "--data-root", world["val"], "--head-checkpoint",
              str(base / "plain_head.pth"), "--out", str(tmp_path / "o")]
    wrong_grid = tmp_path / "grid"
    wrong_grid.mkdir()  # tokens from the head's grid at 84 px: 6 x 6, the 56 px head gives 4 x 4
    save_temporal(TemporalMemory.seeded(smoke_head(84), TemporalConfig(memory_frames=2, tokens=None), 0),
                  wrong_grid / "temporal.pth")
    (tmp_path / "empty").mkdir()
    asked = tmp_path / "k3.yaml"  # a configuration whose temporal section asks for another memory size
    asked.write_text("temporal:\n  memory_frames: 3\n  tokens: 14\n  blocks: 1\n  num_heads: 1\n")
    cases = [
        ([*common, "--temporal-weights", str(world["zero"]), "--config", str(asked)],
         "memory_frames (file 2, requested 3)"),
        ([*common, "--temporal-weights", str(tmp_path / "missing")], "no such file or directory"),
        ([*common, "--temporal-weights", str(tmp_path)], "has no temporal.pth"),
        ([*common, "--temporal-weights", str(base / "plain_head.pth")], "not temporal weights"),
        ([*common, "--temporal-weights", str(world["zero"]), "--memory-frames", "4"],
         "memory_frames (file 2, requested 4)"),
        ([*common, "--temporal-weights", str(wrong_grid)], "token grid"),
        ([*SMOKE, "--data", "self", "--data-root", world["val"], "--head-checkpoint", str(tmp_path / "nope.pth")],
         "not found"),
        ([*SMOKE, "--data", "self", "--data-root", str(tmp_path / "empty")], "no image/mask pairs"),
        ([*common, "--limit", "0"], "no clips"),
        ([*common, "--memory-off"], "need --temporal-weights"),
    ]
    for args, message in cases:
        assert vggts_main(["evaluate", "--clips", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err, (message, err)
    assert vggts_main(["evaluate", *common, "--temporal-weights", str(run)]) == 2
    assert "add --clips" in capsys.readouterr().err


def test_egoexo_clips_report_no_occlusion_and_reject_short_takes(tmp_path, capsys):
    """Ego-Exo4D clips (consecutive annotated moments): occlusion is not annotated, so no
    frame counts as occluded and every unblurred frame is in the rest."""
    from helpers.egoexo_data import build_segswap

    root = build_segswap(tmp_path / "egoexo")
    zero = tmp_path / "zero"
    zero.mkdir()
    save_temporal(TemporalMemory.seeded(smoke_head(112), TCFG, 0), zero / "temporal.pth")
    args = ["--preset", "smoke", "--img-size", "112", "--vggt-checkpoint", "none", "--device", "cpu",
            "--data", "egoexo", "--data-root", str(root), "--split", "val", "--temporal-weights", str(zero)]
    report, table = _evaluate([*args, "--frames", "2"], tmp_path / "out")
    for arm in ("plain", "temporal"):
        s = report["summary"][arm]
        assert s["overall"]["frames"] == 4 and s["rest"]["frames"] == 4  # 2 clips (one per direction) x 2
        assert s["occluded"] == {"iou": None, "frames": 0} and s["blurred"]["frames"] == 0
    assert [f["iou"] for f in report["frames"]["temporal"]] == [f["iou"] for f in report["frames"]["plain"]]
    assert "n/a (0)" in table
    assert vggts_main(["evaluate", "--clips", *args, "--frames", "3", "--out", str(tmp_path / "o3")]) == 2
    assert "annotated moments" in capsys.readouterr().err
