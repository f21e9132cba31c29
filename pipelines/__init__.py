"""KFP pipelines of modelgate (installed as ``modelgate.pipelines``).

Each module ends with a compile entry point; its compiled YAML sits beside it and ships as
package data, read through :func:`package_file`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Pipeline modules whose compiled YAML is committed beside them.
PIPELINE_MODULES = ("release", "redeploy")


def package_file(name: str) -> Path:
    """The compiled YAML of pipeline ``name``, as installed with the package.

    Packages are installed as folders (wheels unpack), so the resource is a real file.
    """
    return Path(str(resources.files(__name__) / f"{name}.yaml"))


#: The folder holding the pipeline modules and their compiled YAML.
PIPELINES_DIR = package_file("release").parent
