"""KFP pipelines of modelgate; each module ends with a compile entry point."""

from pathlib import Path

PIPELINES_DIR = Path(__file__).resolve().parent
#: Pipeline modules whose compiled YAML is committed beside them.
PIPELINE_MODULES = ("release", "redeploy")
