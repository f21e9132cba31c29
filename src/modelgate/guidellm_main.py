"""The ``__main__`` the serving gate runs GuideLLM under (``python -m modelgate.guidellm_main``).

It is GuideLLM's own CLI (same arguments, same output) started so that its fixed start-up
costs less of the gate's time. On a 2-CPU node, GuideLLM 0.8.1 launched as
``python -m guidellm`` spent about 8.7 s before its backend check, 2.4 s starting its worker
processes and 2.3 s after the load ended (``benchmarks/serving_gate.py`` splits the wall time);
this module changes five things, each measured there:

* scikit-learn is never imported. ``transformers`` imports it only for speculative decoding
  (``generation/candidate_generator.py`` behind ``is_sklearn_available()``), which a tokenizer never
  uses; with ``sys.modules["sklearn"] = None`` that check is false, and about 1-3 s of scipy
  and sklearn imports go away. Since transformers is imported without torch (below), the
  generation stack that reaches it is not imported either; this stays for a process where
  torch was imported first (a ``sitecustomize``, say), which that step leaves as it is.
* Worker processes are forked from a forkserver that is started first and imports the worker
  modules (:data:`WORKER_MODULES`) while this process imports ``transformers`` and torch: on
  two CPUs both imports run side by side. GuideLLM's default, ``spawn``, starts every worker and
  its multiprocessing manager as a fresh interpreter that re-imports ``__main__``, which for
  ``python -m guidellm`` is the whole CLI. ``GUIDELLM__MP_CONTEXT_TYPE`` (set by
  :func:`modelgate.slo.guidellm_env` unless the caller set it) chooses the context; GuideLLM
  accepts ``spawn`` and ``forkserver`` (``guidellm/settings.py``).
* ``transformers`` is imported as a tokenizer library: torch is hidden from it while it is
  imported (:func:`import_transformers_tokenizers_only`). With torch installed, resolving
  ``AutoTokenizer`` imports ``GenerationMixin`` (``models/auto/auto_factory.py``), which pulls in
  ``torch._dynamo``, ``torch.distributed`` and ``accelerate``: about 3 s of the 4.8 s GuideLLM
  spent importing before its first request, for a tokenizer that is never given a tensor.
  GuideLLM itself imports torch later, for its data loader, unaffected.
* When the CLI is done (its reports written, its workers joined), the process ends with
  :func:`os._exit` after flushing, skipping about 1.2 s of interpreter finalisation (torch's
  among 4,000 modules).
* Heavy imports happen only under ``if __name__ == "__main__"``: a worker started with
  ``spawn`` re-imports this module as ``__mp_main__`` and gets nothing but the line below.
"""

from __future__ import annotations

import sys

#: Modules GuideLLM's worker processes import to run (``guidellm/scheduler/worker_group.py``
#: pickles ``WorkerProcess.run`` and the backend); preloaded in the forkserver. A name that
#: no longer exists is skipped by the forkserver (``multiprocessing/forkserver.py`` ignores an
#: ``ImportError`` in its preload).
WORKER_MODULES = ["guidellm.scheduler.worker_group", "guidellm.backends"]

#: Imported by ``transformers`` only when installed, and never needed to build prompts.
BLOCKED_MODULES = ("sklearn",)


#: Hidden from ``transformers`` while it is imported; GuideLLM imports it afterwards itself.
HIDDEN_FROM_TRANSFORMERS = "torch"


def import_transformers_tokenizers_only() -> None:
    """Import ``transformers`` and its tokenizer classes as if torch were not installed.

    ``transformers`` decides once per process whether torch exists (``is_torch_available`` in
    ``utils/import_utils.py`` is an ``lru_cache`` over ``importlib.util.find_spec``, which
    answers ``None`` for a name whose ``sys.modules`` entry is ``None``). Without torch it is a
    tokenizers-only library, a mode it supports (``transformers/__init__.py`` says so in the
    advisory it logs, silenced here); GuideLLM only ever calls the tokenizer's text methods. The
    entry is removed afterwards, so ``import torch`` works for everything else. A process that
    has already imported torch is left as it is.
    """
    import os

    if HIDDEN_FROM_TRANSFORMERS in sys.modules:
        return
    advisory = os.environ.get("TRANSFORMERS_NO_ADVISORY_WARNINGS")
    os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = "1"
    sys.modules[HIDDEN_FROM_TRANSFORMERS] = None  # type: ignore[assignment]
    try:
        from transformers import AutoTokenizer, PreTrainedTokenizerBase  # noqa: F401
        from transformers.utils import import_utils

        import_utils.is_torch_available()  # cached from here on
    finally:
        del sys.modules[HIDDEN_FROM_TRANSFORMERS]
        if advisory is None:
            del os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"]
        else:
            os.environ["TRANSFORMERS_NO_ADVISORY_WARNINGS"] = advisory


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("message") prints it and exits 1
    return 1


def main(argv: list[str] | None = None) -> int:
    """Run GuideLLM's CLI with ``argv``; its exit code."""
    import multiprocessing
    from multiprocessing import forkserver

    for name in BLOCKED_MODULES:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    multiprocessing.set_forkserver_preload(WORKER_MODULES)
    forkserver.ensure_running()
    import_transformers_tokenizers_only()

    from guidellm.cli import cli
    from loguru import logger

    try:
        cli.main(args=argv, prog_name="guidellm")
    except SystemExit as e:
        code = _exit_code(e.code)
    else:
        code = 0
    logger.remove()  # GuideLLM's sinks are enqueued: this drains them
    return code


if __name__ == "__main__":
    import os

    status = main()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status)
