"""The state directory of ``objects.state_dir`` (vggts_ros.object_store): every change of the
registry's objects is on disk at once, a restart restores them with their ids, and files that
cannot be used are moved aside with the reason instead of stopping the start."""

import numpy as np
import pytest

from vggts_ros.object_store import ObjectStore
from vggts_ros.registry import ObjectRegistry

CAMERAS = {"ego": None, "exo": None}


def frame(seed, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def box(h=48, w=64, x=10):
    m = np.zeros((h, w), bool)
    m[10:30, x:x + 20] = True
    return m


def followed(tmp_path, mode="keyframe", min_interval=1.0):
    store = ObjectStore(tmp_path / "state", min_interval=min_interval)
    registry = ObjectRegistry()
    errors = []
    store.follow(registry, lambda: mode, errors.append)
    return store, registry, errors


def test_set_replace_move_and_clear_are_on_disk_and_restore_with_the_same_ids(tmp_path):
    store, reg, errors = followed(tmp_path, min_interval=0.0)
    a, _ = reg.put("ego", "cup", frame(0), box(), 1.5, object_id=4)
    reg.put("exo", "box", frame(1), box(x=30), 2.0)  # a free id: 1
    reg.put("ego", "cup again", frame(2), box(x=20), 3.0, object_id=4)  # replaced
    moved = reg.snapshot()[1][0]
    assert reg.advance(moved, frame(3), box(x=40), 3.5)  # track mode moved it on
    assert sorted(p.name for p in store.dir.glob("*.npz")) == ["object_1.npz", "object_4.npz"]

    restored = ObjectRegistry()
    ids, problems = ObjectStore(store.dir).restore_into(restored, CAMERAS)
    assert ids == [1, 4] and problems == []
    got = {o.object_id: o for o in restored.snapshot()[1]}
    assert (got[4].camera, got[4].label, got[4].stamp) == ("ego", "cup again", 3.5)
    assert np.array_equal(got[4].image, frame(3)) and np.array_equal(got[4].mask, box(x=40))
    assert np.array_equal(got[1].image, frame(1)) and np.array_equal(got[1].mask, box(x=30))

    reg.clear(4)
    assert [p.name for p in store.dir.glob("*.npz")] == ["object_1.npz"]
    reg.clear(0)
    assert not list(store.dir.glob("*.npz")) and errors == []


def test_track_mode_moves_are_written_at_most_every_interval(tmp_path):
    store, reg, _ = followed(tmp_path, mode="track", min_interval=3600.0)
    obj, _ = reg.put("ego", "", frame(0), box(), 1.0, object_id=2)
    for k in range(5):  # every set moves it; one write per interval
        obj = reg.snapshot()[1][0]
        reg.advance(obj, frame(10 + k), box(x=10 + k), 2.0 + k)
    (r,), _ = store.load(CAMERAS)
    assert r.stamp == 1.0 and r.mode == "track"  # the set itself is kept, the latest move may lag
    reg.put("ego", "", frame(5), box(x=5), 9.0, object_id=2)  # a new mask is always written
    (r,), _ = store.load(CAMERAS)
    assert r.stamp == 9.0


@pytest.mark.parametrize("damage,reason", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), ""),
    (lambda p: p.write_bytes(b"not a zip"), ""),
    (lambda p: p.rename(p.with_name("object_9.npz")), "holds object 5"),
])
def test_unreadable_files_are_moved_aside_and_the_rest_restores(tmp_path, damage, reason):
    store, reg, _ = followed(tmp_path)
    reg.put("ego", "", frame(0), box(), 1.0, object_id=5)
    reg.put("exo", "", frame(1), box(), 1.0, object_id=6)
    damage(store.path(5))
    ids, problems = ObjectStore(store.dir).restore_into(ObjectRegistry(), CAMERAS)
    assert ids == [6] and len(problems) == 1 and "moved to" in problems[0] and reason in problems[0]
    assert len(list((store.dir / "rejected").iterdir())) == 1


def test_a_camera_that_is_gone_or_has_another_size_sets_its_objects_aside(tmp_path):
    store, reg, _ = followed(tmp_path)
    reg.put("ego", "", frame(0), box(), 1.0, object_id=1)
    reg.put("exo", "", frame(1), box(), 1.0, object_id=2)
    ids, problems = ObjectStore(store.dir).restore_into(ObjectRegistry(), {"head": None, "exo": (96, 128)})
    assert ids == [] and len(problems) == 2
    assert "camera 'ego' is not one of this node's cameras ['exo', 'head']" in problems[0]
    assert "its frame is 64x48, camera 'exo' is 128x96" in problems[1]


def test_an_interrupted_write_leaves_the_previous_file(tmp_path):
    store, reg, _ = followed(tmp_path)
    reg.put("ego", "", frame(0), box(), 1.0, object_id=3)
    store.path(3).with_suffix(".tmp").write_bytes(b"half a write")
    ids, problems = ObjectStore(store.dir).restore_into(ObjectRegistry(), CAMERAS)
    assert ids == [3] and "interrupted write" in problems[0]


def test_a_failed_write_is_reported_and_the_change_still_happens(tmp_path):
    store, reg, errors = followed(tmp_path)
    store.dir.rmdir()
    store.dir.write_text("the disk went away")  # any write into it now fails
    reg.put("ego", "", frame(0), box(), 1.0, object_id=1)
    assert len(reg) == 1 and len(errors) == 1 and "cannot write" in errors[0]


def test_an_unusable_state_dir_is_refused_by_name(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="objects.state_dir .* cannot be created"):
        ObjectStore(blocker / "state")
