"""The node's ROS parameters: declared from ``vggts_ros.config``, validated on every change,
read into a :class:`vggts_ros.config.NodeConfig`.

Rules: unknown parameter overrides refuse the start. While the node is unconfigured (a
lifecycle node before configure or after cleanup) every parameter may be set, and each
change is validated against the whole configuration; configure reads the current values.
Once configured, only the live parameters (``PARAMETERS[name][1]``) may change, and take
effect at once through the node's ``apply(cfg, changed)``; the others are refused with a
reason that says how to change them. ``cameras`` may name new cameras while unconfigured:
their ``camera.<name>.*`` parameters are declared then, so they can be set before configure.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.parameter import Parameter

from vggts_ros.config import CAMERA_DEFAULTS, CAMERA_KEYS, CAMERA_PARAMETERS, PARAMETERS, NodeConfig
from vggts_ros.ros import compat


def descriptor(name: str) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: its description, range, and whether it is live."""
    if name in PARAMETERS:
        text, live, bounds = PARAMETERS[name]
    else:  # camera.<name>.<key>
        text, live, bounds = CAMERA_PARAMETERS[name.rsplit(".", 1)[-1]], False, None
    desc = ParameterDescriptor(name=name, description=text + ("" if live else " (read-only once configured)"),
                               dynamic_typing=name != "cameras")
    if bounds is not None:
        lo, hi = bounds
        if isinstance(lo, int) and isinstance(hi, int):
            desc.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=0)]
        else:
            desc.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    return desc


def is_live(name: str) -> bool:
    return name in PARAMETERS and PARAMETERS[name][1]


class NodeParameters:
    """Declares the node's parameters and guards their changes (see the module docstring).

    ``configured()`` says whether the node is configured now; ``apply(cfg, changed)`` is
    called with the new configuration after live parameters changed while configured."""

    def __init__(self, node, managed: bool, configured: Callable[[], bool],
                 apply: Callable[[NodeConfig, List[Parameter]], None]) -> None:
        self.node = node
        self.managed = managed
        self.configured = configured
        self.apply = apply
        node.declare_parameter("cameras", Parameter.Type.STRING_ARRAY, descriptor("cameras"))
        for key, default in NodeConfig().to_parameters().items():
            if key != "cameras":
                node.declare_parameter(key, default, descriptor(key))
        self.declare_cameras()
        overrides = getattr(node, "_parameter_overrides", {}) or {}
        unknown = sorted(k for k in overrides if not node.has_parameter(k) and k != "use_sim_time"
                         and not k.startswith("qos_overrides."))
        if unknown:
            raise ValueError(f"unknown vggts parameter(s): {unknown}")
        compat.add_parameter_callbacks(node, self._validate, self._applied, lambda p: self._applied(p, pending=True))

    def declare_cameras(self) -> None:
        """``camera.<name>.*`` of every camera ``cameras`` names (defaults unless overridden)."""
        for name in self.node.get_parameter("cameras").value or []:
            for key in CAMERA_KEYS:
                full = f"camera.{name}.{key}"
                if not self.node.has_parameter(full):
                    self.node.declare_parameter(full, CAMERA_DEFAULTS[key], descriptor(full))

    def _flat(self) -> Dict[str, Any]:
        get = self.node.get_parameter
        names = list(get("cameras").value or [])
        flat: Dict[str, Any] = {"cameras": names}
        for key in NodeConfig().to_parameters():
            if key != "cameras":
                flat[key] = get(key).value
        for name in names:
            for key in CAMERA_KEYS:
                full = f"camera.{name}.{key}"
                flat[full] = get(full).value if self.node.has_parameter(full) else CAMERA_DEFAULTS[key]
        return flat

    def config(self, changes=()) -> NodeConfig:
        """The (validated) configuration of the current values with ``changes`` applied."""
        flat = self._flat()
        for p in changes:
            flat[p.name] = p.value
        for name in flat["cameras"] or []:  # cameras named only now: their defaults
            for key in CAMERA_KEYS:
                flat.setdefault(f"camera.{name}.{key}", CAMERA_DEFAULTS[key])
        flat = {k: v for k, v in flat.items() if not k.startswith("camera.") or k.split(".")[1] in flat["cameras"]}
        cfg = NodeConfig.from_parameters(flat)
        for cam in cfg.cameras:
            cam.topic = cam.resolved_topic()
        return cfg.validate()

    @staticmethod
    def _mine(params) -> list:
        return [p for p in params if p.name in PARAMETERS or p.name.startswith("camera.")]

    def _validate(self, params) -> SetParametersResult:
        mine = self._mine(params)
        if not mine:
            return SetParametersResult(successful=True)
        if self.configured():
            fixed = [p.name for p in mine if not is_live(p.name)]
            if fixed:
                how = "deactivate and clean up the lifecycle node first" if self.managed else "restart the node"
                return SetParametersResult(successful=False, reason=(
                    f"read-only while the node is configured: {', '.join(fixed)} ({how} to change it)"))
        try:
            self.config(mine)
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _applied(self, params, pending: bool = False) -> None:
        mine = self._mine(params)
        if not mine:
            return
        if not self.configured():
            if any(p.name == "cameras" for p in mine) and not pending:
                self.declare_cameras()  # settable before configure
            return
        self.apply(self.config(mine if pending else ()), mine)
