"""Pure geometry (PyTorch/NumPy, no ROS): cameras (:mod:`.camera`), depth and objects in 3D.

Modules are imported by name (``from vggts_ros.geometry.camera import ...``); this package
file stays empty so that each module can be added on its own.
"""
