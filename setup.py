from glob import glob

from setuptools import find_packages, setup

from panoseeker_ros.nodes import NODES  # imports nothing else

package_name = "panoseeker_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, package_name + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml") + glob("config/*.xml")),
        ("share/" + package_name + "/config/ptz", glob("config/ptz/*.yaml")),
        ("share/" + package_name + "/config/security", glob("config/security/*.xml")),
        ("share/" + package_name + "/config/accelerate", glob("config/accelerate/*.yaml")),
        ("share/" + package_name + "/config/foxglove", glob("config/foxglove/*.json")),
        ("share/" + package_name + "/sim/bedroom", glob("sim/bedroom/*")),
    ],
    package_data={package_name: ["py.typed"], package_name + ".console": ["static/*"]},
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="panoseeker_ros maintainers",
    maintainer_email="maintainers@panoseeker.invalid",
    description="Active panoramic referring segmentation for pan-tilt cameras (ROS 2)",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "panoseeker = panoseeker_ros.cli:main",
            *(f"{node} = panoseeker_ros.nodes.{node}:main" for node in NODES),
        ],
    },
)
