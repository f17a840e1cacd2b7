"""Package list for the node/ folder installed under the import name ``derot``.

Everything else about the distribution is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    package_dir={"derot": "node"},
    packages=["derot"] + [f"derot.{name}" for name in find_packages("node")],
)
