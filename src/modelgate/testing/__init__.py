"""Test helpers: a tiny locally trained Llama, an lm-eval task it can pass, and a local hub mirror.

Nothing here touches the network: the model and tokenizer are trained on this machine, the
lm-eval task reads a local JSONL file, and :class:`LocalHubMirror` serves git repositories from
disk through ``olah``.
"""

from __future__ import annotations

from modelgate.testing.hub_mirror import LocalHubMirror, PublishedModel, publish_model
from modelgate.testing.tasks import ADDITION_TASK_NAME, evaluate_addition, write_addition_task
from modelgate.testing.tiny_model import TinyModelInfo, build_tiny_model

__all__ = [
    "ADDITION_TASK_NAME",
    "LocalHubMirror",
    "PublishedModel",
    "TinyModelInfo",
    "build_tiny_model",
    "evaluate_addition",
    "publish_model",
    "write_addition_task",
]
