"""VGGT-Segmentor for ROS 2: cross-view object segmentation on synchronised cameras.

The Python package shares its name with the ROS interfaces (``vggts_ros.msg``,
``vggts_ros.srv``). When those are generated into another prefix (a colcon install
space, or a virtual environment's site-packages on the pip path), ``extend_path``
lets both halves be found under one package name.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
