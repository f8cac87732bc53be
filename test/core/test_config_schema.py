"""Configuration as data: every node parameter is declared once (vggts_ros/config.py field
metadata) and the descriptors, validation, YAML comments, reference page, coercion and the
deprecated precision spellings all follow from it."""

import array
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import pytest
import yaml

from vggts_ros import config, parameter_docs, schema
from vggts_ros.config import (CAMERA_DEFAULTS, CAMERA_KEYS, CAMERA_PARAMETERS, DEPRECATED_PARAMETERS, PARAMETERS,
                              GeometricConfig, ModelConfig, NodeConfig, PipelineConfig, load_node_config,
                              load_params_file, precision_of)
from vggts_ros.schema import param

REPO = Path(__file__).resolve().parents[2]
MULTICAM = REPO / "config" / "multicam.yaml"


def shipped() -> NodeConfig:
    return load_node_config(str(MULTICAM))


# ------------------------------------------------------------------ one declaration, derived tables
def test_the_generated_page_and_the_yaml_comments_are_current():
    """docs/parameters.md and config/multicam.yaml's comments are what the declarations give
    (regenerate with `python -m vggts_ros.parameter_docs`)."""
    assert parameter_docs.outdated(REPO) == [], "run python -m vggts_ros.parameter_docs"
    page = (REPO / "docs" / "parameters.md").read_text()
    for name, (text, live, bounds) in PARAMETERS.items():
        if name not in DEPRECATED_PARAMETERS:
            assert f"| `{name}` |" in page, name
    # every parameter line of the reference YAML carries exactly its descriptor text
    lines = parameter_docs.yaml_parameter_lines(MULTICAM.read_text())
    names = {name for _, name, _, _ in lines}
    assert names == set(load_params_file(str(MULTICAM)))
    for _, name, _, comment in lines:
        key = name.rsplit(".", 1)[-1]
        expected = CAMERA_PARAMETERS[key] if name.startswith("camera.") else PARAMETERS[name][0]
        assert comment == expected, name


def test_a_stale_page_or_comment_is_detected(tmp_path):
    (tmp_path / "config").mkdir()
    text = MULTICAM.read_text()
    (tmp_path / "config" / "multicam.yaml").write_text(text.replace("# s, largest stamp difference", "# old words"))
    assert parameter_docs.outdated(tmp_path) == ["docs/parameters.md", "config/multicam.yaml"]
    assert parameter_docs.main(["--check", "--root", str(tmp_path)]) == 1
    parameter_docs.write(tmp_path)
    assert parameter_docs.outdated(tmp_path) == []
    assert (tmp_path / "config" / "multicam.yaml").read_text() == text  # values and other lines kept


def test_descriptors_come_from_the_declarations():
    assert set(NodeConfig().to_parameters()) == set(PARAMETERS)  # what the node declares (no camera listed)
    assert PARAMETERS["sync.slop"] == ("s, largest stamp difference inside one synchronised set", True, (1e-6, 10.0))
    assert PARAMETERS["inference.max_objects"][1:] == (True, (1, 255))
    assert all(isinstance(v, int) for v in PARAMETERS["inference.max_objects"][2])
    assert all(isinstance(v, float) for v in PARAMETERS["publish.stall_timeout"][2])
    assert PARAMETERS["model.backend"][1:] == (False, None)
    assert PARAMETERS["model.backend"][0].endswith("[vggts | geometric]")
    assert PARAMETERS["model.geometric.ratio"] == ("Lowe's ratio test threshold", False, (0.0, 1.0))
    assert PARAMETERS["model.geometric.tilts"][2] is None  # list values: no ROS range (checked by validate)
    assert PARAMETERS["model.dtype"] == ("deprecated: use inference.precision", False, None)
    assert DEPRECATED_PARAMETERS == {"model.dtype": "inference.precision"}
    assert CAMERA_KEYS == ("topic", "role", "compressed", "required", "depth_topic", "intrinsics", "pose")
    assert CAMERA_DEFAULTS == {"topic": "", "role": "exo", "compressed": False, "required": False, "depth_topic": "",
                               "intrinsics": [], "pose": []}
    assert CAMERA_PARAMETERS["role"].endswith("[ego | exo | aerial | ground]")
    live = {n for n, (_, is_live, _) in PARAMETERS.items() if is_live}
    assert live == {f"sync.{k}" for k in ("slop", "queue_size", "stale_after", "min_cameras", "jump_threshold",
                                          "correct_offset_above", "stale_periods", "stale_after_min")} | {
        f"inference.{k}" for k in ("source_mode", "max_rate", "keyframe_history", "max_objects",
                                   "max_label_length", "max_image_pixels")} | {
        f"publish.{k}" for k in ("stall_timeout", "max_age", "refresh_pairs")}


def _outside(value, lo, hi):
    """A value just below ``lo`` (or above ``hi``) of value's type."""
    if lo is not None:
        return lo - 1 if isinstance(value, int) else lo - max(abs(lo) * 1e-3, 1e-9)
    return hi + 1 if isinstance(value, int) else hi * 1.001


def test_every_declared_range_and_choice_is_validated_by_name():
    """For every ranged or choice parameter: the bounds pass, a value just outside (or not a
    choice) is refused with a message naming the parameter."""
    base = shipped()
    checked = 0
    for name, entry in schema.parameters(NodeConfig, skip=("cameras",)).items():
        spec = entry.spec
        if spec.renamed_to:
            continue
        is_list = isinstance(entry.default, (list, tuple))
        if spec.range is not None:
            lo, hi = spec.range
            for ok in (lo, hi):
                value = [ok] * len(entry.default) if is_list else ok
                if name == "sync.min_cameras" and ok > 3:
                    continue  # bounded by the number of cameras too (below)
                base.with_parameters({name: value}).validate()
            for end in ((lo, None), (None, hi)):
                if end[0] is None and end[1] is None:
                    continue
                bad = _outside(entry.default[0] if is_list else entry.default, *end)
                value = [bad] * len(entry.default) if is_list else bad
                with pytest.raises(ValueError, match=rf"{name}( values)? must be in \["):
                    base.with_parameters({name: value}).validate()
            checked += 1
        if spec.choices is not None:
            with pytest.raises(ValueError, match=rf"{name}: 'nonsense' is not one of"):
                base.with_parameters({name: "nonsense"}).validate()
            for choice in spec.choices:
                assert getattr(base.with_parameters({name: choice}), name.split(".")[0]) is not None
            checked += 1
    assert checked >= 45
    with pytest.raises(ValueError, match=r"sync.min_cameras must be in \[1, 3\] \(the number of cameras\), got 4"):
        base.with_parameters({"sync.min_cameras": 4}).validate()
    with pytest.raises(ValueError, match="sync.stale_periods must be in .* got nan"):
        base.with_parameters({"sync.stale_periods": math.nan}).validate()
    with pytest.raises(ValueError, match=r"model.device: 'cuda:' is not one of \('auto', 'cuda', 'cpu'\) or cuda:<index>"):
        base.with_parameters({"model.device": "cuda:"}).validate()
    with pytest.raises(ValueError, match=r"camera.exo1.role: 'satellite' is not one of"):
        base.with_parameters({"camera.exo1.role": "satellite"}).validate()


def test_all_errors_are_reported_at_once():
    bad = shipped().with_parameters({"sync.slop": 0.0, "inference.max_objects": 0, "model.backend": "magic"})
    with pytest.raises(ValueError) as info:
        bad.validate()
    text = str(info.value)
    assert text.startswith("invalid vggts configuration:")
    assert "sync.slop must be in [1e-06, 10.0], got 0.0" in text
    assert "inference.max_objects must be in [1, 255], got 0" in text
    assert "model.backend: 'magic' is not one of ('vggts', 'geometric')" in text


def test_flat_parameters_round_trip_the_shipped_files():
    for path in sorted((REPO / "config").glob("*.yaml")):
        cfg = load_node_config(str(path))
        flat = cfg.to_parameters()
        assert NodeConfig.from_parameters(flat) == cfg
        assert isinstance(flat["model.geometric.tilts"], list)  # ROS has no tuples
        assert isinstance(cfg.model.geometric.tilts, tuple)
        assert cfg.model.geometric == GeometricConfig()
    # ROS delivers array parameters as array.array
    flat = shipped().to_parameters()
    flat["model.geometric.tilts"] = array.array("d", [1.0, 3.0])
    flat["model.geometric.colour_bins"] = array.array("q", [2, 8, 8])
    cfg = NodeConfig.from_parameters(flat)
    assert cfg.model.geometric.tilts == (1.0, 3.0) and cfg.model.geometric.colour_bins == (2, 8, 8)
    with pytest.raises(ValueError, match=r"model.geometric.colour_bins: expected a list of 3 values"):
        NodeConfig.from_parameters({**flat, "model.geometric.colour_bins": [4, 4]})
    with pytest.raises(ValueError, match=r"unknown vggts parameter\(s\): \['model.geometric.ratioo'\]"):
        shipped().with_parameters({"model.geometric.ratioo": 0.5})
    with pytest.raises(ValueError, match=r"camera.cam9.topic \(camera not listed in 'cameras'\)"):
        shipped().with_parameters({"camera.cam9.topic": "x"})


# ------------------------------------------------------------------ one coercion
BOOLEAN_CASES = [(True, True), ("true", True), ("FALSE", False), ("yes", True), ("off", False)]
REFUSED_BOOLEANS = [1, 0, "1", "maybe", 2.0]


@pytest.mark.parametrize("given,expected", BOOLEAN_CASES)
def test_node_and_training_read_booleans_alike(given, expected):
    """The two loaders used to disagree (the node refused "yes", training took 1 and "1"):
    one rule now, the same answer in both."""
    from vggts_ros.training.config import TrainConfig

    node = shipped().with_parameters({"publish.overlay": given})
    assert node.publish.overlay is expected
    train = TrainConfig().override([f"run.tensorboard={yaml.safe_dump(given).splitlines()[0]}"])
    assert train.run.tensorboard is expected
    assert TrainConfig.from_dict({"run": {"tensorboard": given}}).run.tensorboard is expected


@pytest.mark.parametrize("given", REFUSED_BOOLEANS)
def test_node_and_training_refuse_the_same_non_booleans(given):
    from vggts_ros.training.config import TrainConfig

    with pytest.raises(ValueError, match=r"publish.overlay: expected true or false, got"):
        shipped().with_parameters({"publish.overlay": given})
    with pytest.raises(ValueError, match=r"run.tensorboard: expected true or false, got"):
        TrainConfig.from_dict({"run": {"tensorboard": given}})


def test_numbers_as_strings_and_refusals_name_the_setting():
    from vggts_ros.training.config import TrainConfig

    # YAML 1.1 reads 5e-2 as a string: both loaders take it as the number
    assert shipped().with_parameters({"sync.slop": "5e-2"}).sync.slop == 0.05
    assert TrainConfig.from_dict({"optim": {"lr": "5e-5"}}).optim.lr == 5e-5
    assert shipped().with_parameters({"inference.max_objects": 8.0}).inference.max_objects == 8
    for name, value, message in [
        ("sync.slop", "wide", "sync.slop: expected a number, got 'wide'"),
        ("sync.slop", True, "sync.slop: expected a number, got True"),
        ("inference.max_objects", 2.5, "inference.max_objects: expected an integer, got 2.5"),
        ("inference.max_objects", True, "inference.max_objects: expected an integer, got True"),
        ("model.config", 7, "model.config: expected a string, got 7"),
        ("model.geometric.tilts", "wide", "model.geometric.tilts[0]: expected a number, got 'wide'"),
    ]:
        with pytest.raises(ValueError) as info:
            shipped().with_parameters({name: value})
        assert message in str(info.value)
    with pytest.raises(ValueError, match=r"optim.epochs: expected an integer, got 'many'"):
        TrainConfig.from_dict({"optim": {"epochs": "many"}})
    with pytest.raises(ValueError, match=r"model.init_head: expected a string, got 3"):
        TrainConfig.from_dict({"model": {"init_head": 3}})
    assert TrainConfig.from_dict({"model": {"init_head": None}}).model.init_head is None
    assert TrainConfig.from_dict({"data": {"directions": "ego2exo"}}).data.directions == ["ego2exo"]
    assert TrainConfig.from_dict({"data": {"target_crop": [0.5, 0.75]}}).data.target_crop == (0.5, 0.75)


# ------------------------------------------------------------------ adding a parameter is one declaration
@dataclass
class _Inner:
    gain: float = param(1.0, doc="a gain", range=(0.0, 2.0))
    bins: Tuple[int, ...] = param((4, 8), doc="histogram bins", range=(1, 64))


@dataclass
class _Section:
    mode: str = param("a", doc="a mode", choices=("a", "b"), live=True)
    intrinsics: List[float] = param(default_factory=list, doc="fx, fy, cx, cy")
    note: Optional[str] = param(None, doc="free text")
    inner: _Inner = field(default_factory=_Inner)


@dataclass
class _Tree:
    section: _Section = field(default_factory=_Section)


def test_a_new_declaration_is_flattened_loaded_checked_and_overridden():
    entries = schema.parameters(_Tree)
    assert list(entries) == ["section.mode", "section.intrinsics", "section.note", "section.inner.gain",
                             "section.inner.bins"]
    assert entries["section.mode"].spec.live and entries["section.intrinsics"].default == []
    flat = schema.flatten(_Tree())
    assert flat == {"section.mode": "a", "section.intrinsics": [], "section.note": None, "section.inner.gain": 1.0,
                    "section.inner.bins": (4, 8)}
    # an empty list in a ROS params file arrives as None (not set): an empty list again
    assert schema.from_dict(_Tree, schema.unflatten({**flat, "section.intrinsics": None})) == _Tree()
    with pytest.raises(ValueError, match=r"section.inner.gain: a value is required, got null"):
        schema.from_dict(_Tree, schema.unflatten({**flat, "section.inner.gain": None}))
    tree = schema.from_dict(_Tree, schema.unflatten({**flat, "section.intrinsics": ["500", 501, 320.5, 240],
                                                     "section.inner.bins": [2]}))
    assert tree.section.intrinsics == [500.0, 501.0, 320.5, 240.0] and tree.section.inner.bins == (2,)
    tree.section.inner.gain, tree.section.inner.bins, tree.section.mode = 3.0, (0, 8), "c"
    assert schema.field_errors(tree) == ["section.mode: 'c' is not one of ('a', 'b')",
                                         "section.inner.gain must be in [0.0, 2.0], got 3.0",
                                         "section.inner.bins values must be in [1, 64], got (0, 8)"]
    data = schema.assign(schema.to_dict(_Tree()), ["section.inner.gain=0.5", "section.note=null"])
    assert schema.from_dict(_Tree, data).section.inner.gain == 0.5
    with pytest.raises(ValueError, match=r"section.inner has no key 'gian'; known: \['bins', 'gain'\]"):
        schema.assign(schema.to_dict(_Tree()), ["section.inner.gian=1"])
    with pytest.raises(ValueError, match="expected name=value"):
        schema.assign(schema.to_dict(_Tree()), ["section.inner.gain"])
    with pytest.raises(ValueError, match=r"_Tree: unknown key\(s\) \['sect'\]"):
        schema.from_dict(_Tree, {"sect": {}})


# ------------------------------------------------------------------ one precision setting
def test_model_dtype_in_a_params_file_becomes_inference_precision_with_a_warning(tmp_path, caplog):
    tree = yaml.safe_load(MULTICAM.read_text())
    tree["/**"]["ros__parameters"]["model"]["dtype"] = "bfloat16"
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(tree))
    with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
        cfg = load_node_config(str(path))
    assert cfg.inference.precision == "bf16" and cfg.model.dtype == ""
    assert [r.getMessage() for r in caplog.records] == [
        "model.dtype is deprecated: use inference.precision (model.dtype: bfloat16 is inference.precision: bf16)"]
    assert cfg.inference.pipeline().precision == "bf16"
    # mapped once: the folded configuration round-trips without a second warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
        assert NodeConfig.from_parameters(cfg.to_parameters()) == cfg
    assert caplog.records == []
    # float32 asked for nothing: precision stays (even a non-default one)
    tree["/**"]["ros__parameters"]["model"]["dtype"] = "float32"
    tree["/**"]["ros__parameters"]["inference"]["precision"] = "float64"
    path.write_text(yaml.safe_dump(tree))
    with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
        assert load_node_config(str(path)).inference.precision == "float64"
    assert "model.dtype is deprecated: use inference.precision" in caplog.text
    # a contradiction and an unknown old value are errors naming both spellings
    tree["/**"]["ros__parameters"]["model"]["dtype"] = "bfloat16"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match=r"model.dtype: bfloat16 \(deprecated, means inference.precision: bf16\) "
                                         r"contradicts inference.precision: float64"):
        load_node_config(str(path))
    tree["/**"]["ros__parameters"]["model"]["dtype"] = "float16"
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match=r"model.dtype: 'float16' is not one of \('float32', 'bfloat16'\) "
                                         r"\(model.dtype is deprecated: use inference.precision\)"):
        load_node_config(str(path))


def test_python_spellings_fold_into_pipeline_precision(caplog):
    with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
        pipe = PipelineConfig(backbone_dtype="bfloat16", refine_iterations=2)
    assert (pipe.precision, pipe.backbone_dtype) == ("bf16", "")
    assert "PipelineConfig.backbone_dtype is deprecated: use PipelineConfig.precision" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
        assert dataclasses.replace(pipe, refine_iterations=1).precision == "bf16"  # not mapped twice
        assert PipelineConfig().precision == "float32"
    assert caplog.records == []
    with caplog.at_level(logging.WARNING, logger="vggts_ros.config"):
        folded = precision_of(ModelConfig(dtype="bfloat16"), PipelineConfig(refine_iterations=3))
    assert (folded.precision, folded.refine_iterations) == ("bf16", 3)
    assert "ModelConfig.dtype is deprecated: use PipelineConfig.precision" in caplog.text
    assert precision_of(ModelConfig(), None) == PipelineConfig()
    with pytest.raises(ValueError, match="contradicts PipelineConfig.precision: float64"):
        precision_of(ModelConfig(dtype="bfloat16"), PipelineConfig(precision="float64"))
    with pytest.raises(ValueError, match="contradicts PipelineConfig.precision: tf32"):
        PipelineConfig(backbone_dtype="bfloat16", precision="tf32")


def test_the_backbone_takes_its_autocast_from_the_precision_mode():
    import torch

    from vggts_ros import precision

    assert precision.backbone_dtype("bf16", "cpu") == torch.bfloat16
    assert precision.backbone_dtype("release", "cpu") == torch.float32  # CUDA autocast only, as released
    assert precision.backbone_dtype("release", "cuda") == torch.bfloat16
    for mode in ("float32", "tf32", "float64"):
        assert precision.backbone_dtype(mode, "cuda") == torch.float32
    with pytest.raises(ValueError, match="unknown precision mode 'fp8'"):
        precision.backbone_dtype("fp8", "cpu")


# ------------------------------------------------------------------ the geometric backend from YAML
def test_geometric_settings_reach_the_backend_from_yaml(tmp_path):
    from vggts_ros.backends import create_segmentor

    tree = yaml.safe_load(MULTICAM.read_text())
    geometric = tree["/**"]["ros__parameters"]["model"]["geometric"]
    geometric.update(ratio=0.7, tilts=[1.0, 2.0], grabcut="off")
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(tree))
    cfg = load_node_config(str(path))
    cfg.model.backend = "geometric"
    seg = create_segmentor(cfg.model)
    assert (seg.config.ratio, seg.config.tilts, seg.config.grabcut) == (0.7, (1.0, 2.0), False)
    geometric["ratio"] = 1.5
    path.write_text(yaml.safe_dump(tree))
    with pytest.raises(ValueError, match=r"model.geometric.ratio must be in \[0.0, 1.0\], got 1.5"):
        load_node_config(str(path))


def test_geometric_options_are_checked_and_never_change_the_callers_config():
    from vggts_ros.geometric import GeometricSegmentor

    mine = GeometricConfig()
    seg = GeometricSegmentor(mine, fallback=False, ratio="0.6")
    assert (seg.config.fallback, seg.config.ratio) == (False, 0.6) and mine == GeometricConfig()
    with pytest.raises(ValueError, match=r"model.geometric: unknown key\(s\) \['ratioo'\]"):
        GeometricSegmentor(ratioo=0.5)
    with pytest.raises(ValueError, match=r"model.geometric.min_inliers must be in \[4, 1000000\], got 2"):
        GeometricSegmentor(min_inliers=2)
