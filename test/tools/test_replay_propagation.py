"""``vggts replay`` in real time with and without propagation, on a moving sequence: with a
cross-view step slower than the cameras, propagation publishes a mask on every target
frame (saying it was propagated and from how old a result), without it only the frames
the step processed get one; both are scored against the ground truth."""


import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags is not installed (pip install -r requirements.txt)")

from helpers.oracle_backend import OracleSegmentor
from vggts_ros import bags
from vggts_ros.cli import main
from vggts_ros.replay import ReplayOptions, SourceMask, replay
from vggts_ros.sequences import load_sequence

STEP = 0.45  # simulated seconds per cross-view step: 4.5 frame intervals at 10 Hz


@pytest.fixture(scope="module")
def seq():
    return load_sequence("moving:0/2s")


@pytest.fixture(scope="module")
def bag(tmp_path_factory, seq):
    path = tmp_path_factory.mktemp("prop") / "moving.mcap"
    bags.write_sequence_bag(seq, path)
    return path


def options(seq, **kw):
    img, masks = seq.view(0, "ego")
    return ReplayOptions(source_masks=[SourceMask("ego", masks[o], None, o, f"box {o}") for o in seq.object_ids],
                         gt_topics={n: f"/scene/{n}/gt" for n in seq.targets},
                         roles={n: seq.role(n) for n in seq.cameras}, progress=False, copy_inputs=False,
                         step_seconds=STEP, **kw)


def by_camera(result):
    out = {}
    for row in result.scores:
        out.setdefault((row.camera, row.object_id), []).append(row)
    return out


def test_propagation_on_and_off_at_the_same_load(tmp_path, seq, bag):
    oracle = OracleSegmentor(seq)
    off = replay(bag, tmp_path / "off.mcap", oracle, options(seq, realtime=True))
    on = replay(bag, tmp_path / "on.mcap", OracleSegmentor(seq), options(seq, propagation=True))
    frames = len(seq)
    # The synchroniser hands out the set of frame k when frame k+1 arrives (0.1 s later);
    # the worker takes the newest set whenever it is free: the same steps in both runs.
    starts = [0.104, 0.554, 1.004, 1.454, 1.904, 2.354]  # the last one: the set flushed at the end
    assert [round(s["start"] - 100.0, 3) for s in off.steps] == starts
    assert [round(s["start"] - 100.0, 3) for s in on.steps] == starts
    assert off.dropped_sets == on.dropped_sets == frames - len(starts)
    for cam in seq.targets:
        assert len(off.outputs[cam]) == len(starts)
        # every frame from the first result's arrival (0.554 s) on, frames 6..19, gets a mask
        assert len(on.outputs[cam]) == frames - 6
    rows = by_camera(on)
    for (cam, oid), rs in rows.items():
        if oid in (1, 2):  # never hidden
            assert min(r.iou for r in rs) >= 0.85, (cam, oid, [round(r.iou, 3) for r in rs])
    # paths name the propagation and the age of the cross-view result
    ages = sorted({r["path"] for r in on.results if r["camera"] == "exo1" and r["object_id"] == 1})
    assert ages[0] == "propagated(age=0.500s, from=oracle)" and all(p.startswith("propagated(age=0.") for p in ages)
    # against the frames it was published for, propagation is nearly as accurate as the
    # processed frames themselves (the oracle: exact), on more than twice as many frames
    mean_on = np.mean([r.iou for (c, o), rs in rows.items() if o in (1, 2) for r in rs])
    mean_off = np.mean([r.iou for (c, o), rs in by_camera(off).items() if o in (1, 2) for r in rs])
    assert mean_off == pytest.approx(1.0) and mean_on >= 0.9


def test_real_time_output_is_reproducible(tmp_path, seq, bag):
    # (the same file name: an MCAP stores it)
    a = replay(bag, tmp_path / "a" / "out.mcap", OracleSegmentor(seq), options(seq, propagation=True))
    b = replay(bag, tmp_path / "b" / "out.mcap", OracleSegmentor(seq), options(seq, propagation=True))
    assert (tmp_path / "a" / "out.mcap").read_bytes() == (tmp_path / "b" / "out.mcap").read_bytes()
    assert a.steps == b.steps


def test_refresh_pairs_take_turns(tmp_path, seq, bag):
    res = replay(bag, tmp_path / "pairs.mcap", OracleSegmentor(seq), options(seq, propagation=True, refresh_pairs=3))
    cams = [{c for _, c in s["pairs"]} for s in res.steps]
    assert cams[:4] == [{"exo1"}, {"exo2"}, {"exo1"}, {"exo2"}]
    assert all(len(s["pairs"]) == 3 for s in res.steps)


@pytest.mark.parametrize("extra, message", [(["--step-seconds", "0"], "--step-seconds must be > 0"),
                                            (["--max-age", "-1"], "--max-age must be > 0"),
                                            (["--refresh-pairs", "-2"], "--refresh-pairs must be >= 0")])
def test_bad_real_time_options_are_named(tmp_path, bag, seq, capsys, extra, message):
    import cv2

    png = tmp_path / "box1.png"
    cv2.imwrite(str(png), seq.view(0, "ego")[1][1].astype(np.uint8) * 255)
    code = main(["replay", str(bag), "--out", str(tmp_path / "x.mcap"), "--source-mask", f"ego={png}",
                 "--role", "ego=ego", "--no-progress", "--propagation"] + extra)
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.mcap").exists()
