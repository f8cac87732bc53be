"""Parity of VGGT's camera and depth heads (and of the pose-encoding conversion and the
unprojection) with the reference implementation: ``vggt_geometry_tiny.pt``.

The model is built from the fixture's config (aggregator + camera head + depth head; our
backbone also carries a track head, whose keys sort after the others and so do not move
their deterministic weights), filled by the deterministic rule and checked key by key
against ``weight_sums`` before any output is compared.

Float64 is the proof: the project's float64 run against the reference's float64 run, every
key within ``F64_REL`` (1e-9) of its range. Two stored float64 values carry a float32
rounding made by the reference itself, and are compared accordingly: ``intrinsic`` (the
reference fills a float32 tensor) and ``world_points`` (the reference's unprojection
rounds the camera points to float32 before moving them to the world). Float32 outputs are
compared within tolerances derived from the stored float32-vs-float64 drift
(``helpers.parity_tolerances``).
"""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import load_fixture
from helpers import parity_tolerances as tol
from vggts_ros.geometry import camera as C
from vggts_ros.models.backbone import VGGTBackbone, backbone_config_from_dict
from vggts_ros.models.deterministic import weight_sums

NAME = "vggt_geometry_tiny.pt"
WEIGHT_SUM_REL = 1e-12  # as test_backbone_parity: the weights are the fixture's bit for bit
F32_ULP = 2.0**-23


@pytest.fixture(scope="module")
def fx():
    data = load_fixture(NAME)
    if "float64" not in data:
        pytest.fail(f"{NAME} has no 'float64' entry")
    return data


@pytest.fixture(scope="module")
def model(fx):
    m = VGGTBackbone(backbone_config_from_dict(fx["config"])).eval()
    assert m.cfg.geometry_heads, "the fixture's config asks for the camera and depth heads"
    return m.fill_deterministic(fx["weight_seed"])


def _run(fx, model, dtype):
    if dtype != torch.float32:
        model = copy.deepcopy(model).to(dtype)
    size = fx["config"]["img_size"]
    images = torch.rand((1, fx["frames"], 3, size, size), generator=torch.Generator().manual_seed(fx["image_seed"]))
    images = images.to(dtype)
    with torch.no_grad():
        tokens, start = model.encode(images, keep_layers=model.needed_layers(geometry=True))
        geo = model.geometry(tokens, images, start)
    extrinsic, intrinsic = geo.cameras()
    world = C.unproject_depth(geo.depth[0, ..., 0], extrinsic[0], intrinsic[0])
    return {"geo": geo, "extrinsic": extrinsic, "intrinsic": intrinsic, "world_points": world}


@pytest.fixture(scope="module")
def run32(fx, model):
    return _run(fx, model, torch.float32)


@pytest.fixture(scope="module")
def run64(fx, model):
    return _run(fx, model, torch.float64)


def test_geometry_weight_sums(fx, model):
    """Every key of the reference model (aggregator, camera head, depth head), same sums."""
    got = {k: v for k, v in weight_sums(model).items() if not k.startswith("track_head.")}
    expected = fx["weight_sums"]
    assert sorted(set(expected) - set(got)) == [], "reference keys missing from our network"
    assert sorted(set(got) - set(expected)) == [], "keys of our network not in the reference"
    assert sum(k.startswith("camera_head.") for k in expected) == 69  # trunk depth 4, as VGGT-1B
    assert sum(k.startswith("depth_head.") for k in expected) == 62
    bad = [k for k in sorted(expected) if abs(got[k] - expected[k]) > WEIGHT_SUM_REL * max(1.0, abs(expected[k]))]
    assert not bad, f"deterministic weights differ for {len(bad)} key(s): {bad[:5]}"


# ----------------------------------------------------------------------------- float64: exact
def test_pose_encoding_every_iteration_float64(fx, run64):
    ref = fx["float64"]["pose_enc"]
    ours = run64["geo"].pose_encodings
    assert len(ours) == len(ref) == fx["config"]["camera_head"]["iterations"]
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.dtype == torch.float64 and a.shape == b.shape == (1, fx["frames"], 9)
        err = tol.assert_within(a, b, tol.f64_tolerance(b), f"float64 pose encoding, iteration {i}")
        print(f"float64 pose_enc[{i}]: max abs error {err:.3g} (range {b.abs().max().item():.3g})")


@pytest.mark.parametrize("key", ["depth", "depth_conf"])
def test_depth_and_confidence_float64(fx, run64, key):
    ref = fx["float64"][key]
    ours = getattr(run64["geo"], key)
    assert ours.dtype == torch.float64 and ours.shape == ref.shape
    err = tol.assert_within(ours, ref, tol.f64_tolerance(ref), f"float64 {key}")
    print(f"float64 {key}: max abs error {err:.3g} (range {ref.abs().max().item():.3g})")


def test_cameras_float64(fx, run64):
    ref = fx["float64"]
    err = tol.assert_within(run64["extrinsic"], ref["extrinsic"], tol.f64_tolerance(ref["extrinsic"]),
                            "float64 extrinsic")
    print(f"float64 extrinsic: max abs error {err:.3g}")
    # The reference builds intrinsics in a float32 tensor even from float64 encodings: the
    # stored value is the float64 one rounded to float32, so ours must be within half a
    # float32 ulp of it (plus the float64 tolerance).
    stored = ref["intrinsic"].double()
    ours = run64["intrinsic"]
    assert ours.dtype == torch.float64
    bound = 0.5 * F32_ULP * stored.abs() + tol.f64_tolerance(stored)
    excess = ((ours - stored).abs() - bound).max().item()
    assert excess <= 0, f"float64 intrinsic beyond float32 rounding of the stored value by {excess:.3g}"
    assert torch.equal(ours.float(), ref["intrinsic"]), "float64 intrinsics rounded to float32 differ from the stored"
    print(f"float64 intrinsic: max abs error {(ours - stored).abs().max().item():.3g} (stored as float32)")


def test_world_points_float64(fx, run64):
    """(1) The reference's computation step for step (camera points rounded to float32,
    then moved to the world in float64) from our depth, intrinsics and extrinsics: within
    F64_REL. (2) Our all-float64 unprojection: within the float32 rounding the reference
    applied to the camera points."""
    ref = fx["float64"]["world_points"]
    depth = run64["geo"].depth[0, ..., 0]
    K32 = run64["intrinsic"][0].float().double()
    cam32 = C.depth_to_camera_points(depth, K32).float().double()
    replayed = C.camera_to_world(cam32, run64["extrinsic"][0])
    err = tol.assert_within(replayed, ref, tol.f64_tolerance(ref), "float64 world points (reference rounding replayed)")
    print(f"float64 world_points, reference's float32 rounding of camera points replayed: max abs error {err:.3g}")
    ours = run64["world_points"]
    assert ours.dtype == torch.float64 and ours.shape == ref.shape
    cam = C.depth_to_camera_points(depth, run64["intrinsic"][0])
    bound = 4 * 0.5 * F32_ULP * cam.abs().sum(-1).max().item()  # |R| <= 1: per-coordinate rounding summed
    err_full = tol.assert_within(ours, ref, bound, "float64 world points (all float64)")
    print(f"float64 world_points, all float64: max abs error {err_full:.3g} (bound {bound:.3g}, "
          f"range {ref.abs().max().item():.3g})")


# ----------------------------------------------------------------------------- float32: within the drift
def _float32_tolerance(ref32, ref64, what: str) -> float:
    """``value_tolerance`` from the stored drift, after checking that the stored float32
    run is a float32 rounding of the float64 one at all (within the documented float32
    tolerance, ``REL_FLOOR`` of the range: these heads do not amplify rounding the way
    the tracker does). Without that check a wrong float32 reference would widen its own
    tolerance."""
    d = tol.drift(ref32, ref64)
    limit = tol.REL_FLOOR * max(1.0, torch.as_tensor(ref64).abs().max().item())
    assert d <= limit, f"{what}: the stored float32 run is {d:.3g} from the float64 run (> {limit:.3g})"
    return tol.value_tolerance(ref32, ref64)


def test_pose_encoding_every_iteration_float32(fx, run32):
    ours, ref, ref64 = run32["geo"].pose_encodings, fx["pose_enc"], fx["float64"]["pose_enc"]
    assert len(ours) == len(ref)
    for i, (a, b, b64) in enumerate(zip(ours, ref, ref64)):
        assert a.dtype == torch.float32 and a.shape == b.shape
        t = _float32_tolerance(b, b64, f"pose encoding, iteration {i}")
        err = tol.assert_within(a, b, t, f"float32 pose encoding, iteration {i}")
        print(f"float32 pose_enc[{i}]: max abs error {err:.3g} (tolerance {t:.3g}, drift {tol.drift(b, b64):.3g})")


@pytest.mark.parametrize("key", ["depth", "depth_conf"])
def test_depth_and_confidence_float32(fx, run32, key):
    ours, ref, ref64 = getattr(run32["geo"], key), fx[key], fx["float64"][key]
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    t = _float32_tolerance(ref, ref64, key)
    err = tol.assert_within(ours, ref, t, f"float32 {key}")
    print(f"float32 {key}: max abs error {err:.3g} (tolerance {t:.3g}, drift {tol.drift(ref, ref64):.3g})")


@pytest.mark.parametrize("key", ["extrinsic", "intrinsic", "world_points"])
def test_cameras_and_world_points_float32(fx, run32, key):
    ours, ref, ref64 = run32[key], fx[key], fx["float64"][key]
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    t = _float32_tolerance(ref, ref64, key)
    err = tol.assert_within(ours, ref, t, f"float32 {key}")
    print(f"float32 {key}: max abs error {err:.3g} (tolerance {t:.3g}, drift {tol.drift(ref, ref64):.3g})")
