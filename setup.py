"""Package discovery for the repository's layout (the rest of the metadata is in pyproject.toml).

`plans/`, `callbacks/` and `simulated_devices/` sit at the top of the repository but are installed as
`xafs_stream.plans`, `xafs_stream.callbacks` and `xafs_stream.simulated_devices`; no generic top-level
module is installed. pyproject.toml alone cannot list these remapped folders together with the
discovered `xafs_stream.*` subpackages, hence this file.
"""

from setuptools import find_packages, setup

BEAMLINE_SIDE = ("plans", "callbacks", "simulated_devices")

packages = find_packages(include=["xafs_stream", "xafs_stream.*"])
package_dir = {"xafs_stream": "xafs_stream"}
for folder in BEAMLINE_SIDE:
    name = f"xafs_stream.{folder}"
    package_dir[name] = folder
    packages.append(name)
    for sub in find_packages(where=folder):
        packages.append(f"{name}.{sub}")
        package_dir[f"{name}.{sub}"] = f"{folder}/{sub.replace('.', '/')}"

setup(packages=packages, package_dir=package_dir)
