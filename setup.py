"""pip installation of the vggts_ros Python package (the pip path).

In a ROS 2 workspace the package is built by colcon through CMakeLists.txt instead;
on the pip path the interfaces are generated with CMake first (see README).
"""

from glob import glob

from setuptools import find_packages, setup

setup(
    name="vggts_ros",
    version="0.1.0",
    description="VGGT-Segmentor for ROS 2: cross-view object segmentation on synchronised cameras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["vggts_ros", "vggts_ros.*"]),
    package_data={"vggts_ros": ["share/config/*.yaml", "share/launch/*.py"]},
    # The interface definitions, where a ROS install keeps them (<prefix>/share/vggts_ros):
    # `vggts replay` reads msg/*.msg to write ProjectedPoints without ROS installed.
    data_files=[("share/vggts_ros/msg", sorted(glob("msg/*.msg"))),
                ("share/vggts_ros/srv", sorted(glob("srv/*.srv")))],
    install_requires=[
        "numpy>=1.24",
        "torch>=2.2",
        "opencv-python-headless>=4.8",
        "scikit-learn>=1.3",
        "scikit-image>=0.22",
        "pyyaml>=6",
        "tqdm>=4",
    ],
    extras_require={
        "hub": ["huggingface-hub>=0.20"],
        "train": ["tensorboard>=2.14"],
        "test": ["pytest>=7"],
    },
    entry_points={
        "console_scripts": [
            "vggts = vggts_ros.cli:main",
            "vggts_node = vggts_ros.ros.node:main",
            "vggts_lifecycle_node = vggts_ros.ros.lifecycle:main",
        ]
    },
)
