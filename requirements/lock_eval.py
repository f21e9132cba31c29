"""Write requirements/eval.txt: the exact pins the eval image adds on top of the vLLM image.

Run with the project environment: ``.venv/bin/python requirements/lock_eval.py`` (``make lock``
does, after main.txt). It needs the package index and a CPython 3.12 interpreter, and takes a
few minutes.

The eval image (images/eval/Containerfile) is ``vllm/vllm-openai:<tag>``, a CUDA build of vLLM
on CPython 3.12 (Ubuntu 22.04, glibc 2.35), plus ``pip install --no-deps -r
requirements/eval.txt`` and modelgate, then ``pip check``. So the pins are resolved for that
platform by pip's resolver (``pip install --dry-run --report`` with ``--python-version 3.12``,
the image's manylinux tags and ``--only-binary=:all:``), never read from this machine's
environments (vLLM's CPU build on Python 3.11, whose dependencies and markers differ):

1. the vLLM image: ``vllm==<tag>`` alone;
2. the eval image: the same plus ``lm-eval[api]``, ``kfp``, ``kfp-kubernetes``, ``boto3`` and
   modelgate's own dependencies, with main.txt's versions as constraints for every package the
   vLLM image does not ship (both modelgate images run the same lm-eval and kfp);
3. eval.txt is what (2) installs beyond (1), plus each package of (1) that (2) needs at another
   version (kfp pins protobuf<7 and an exact requests), marked ``# overrides the vLLM image's
   <version>: <requirer> needs <requirement>``; (2) is resolved again with main.txt's
   versions for those, so every pin is main.txt's;
4. the image's ``pip check`` is emulated on (1) with (3) installed over it and modelgate on top,
   from the metadata pip resolved (markers evaluated for the image, requested extras included):
   nothing is written unless it holds.

pip evaluates environment markers with the interpreter it runs on, not with ``--python-version``
(the report's ``environment`` shows it), so pip runs in a throwaway venv of a CPython 3.12
interpreter: ``$LOCK_PYTHON``, else ``python3.12`` on PATH, else pyenv's. ``--platform`` needs
``--only-binary=:all:``, so the pins the index has as sdists only (:data:`SDIST_ONLY`, pure
Python) are built into wheels first and offered with ``--find-links``.

eval.txt's header carries a digest of every input (:func:`inputs_digest`) and its end lists the
vLLM image's packages as resolved (comments): tests/unit/test_images.py checks both offline.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUTPUT = HERE / "eval.txt"
CONTAINERFILE = ROOT / "images" / "eval" / "Containerfile"
#: What the eval image needs besides modelgate's own runtime dependencies.
EVAL_NEEDS = ("lm-eval[api]", "kfp", "kfp-kubernetes", "boto3")
#: The vLLM image's interpreter (vLLM's docker/Dockerfile: ARG PYTHON_VERSION=3.12).
PYTHON = "3.12"
#: glibc of the vLLM image's Ubuntu 22.04 base: wheels up to manylinux_2_35 install there
#: (vllm 0.32.0 needs llguidance 1.7, whose x86_64 wheels are manylinux_2_31).
GLIBC_MINOR = 35
#: pip's ``--platform`` takes exact tags and does not add the older ones a glibc accepts.
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux_2_12_x86_64",
    "manylinux2010_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
)
ABIS = (f"cp{PYTHON.replace('.', '')}", "abi3", "none")
#: main.txt pins published as sdists only (pure Python): built into wheels for the resolver.
SDIST_ONLY = ("kfp-server-api", "rouge-score", "sqlitedict", "word2number")
OVERRIDE_NOTE = "overrides the vLLM image's"
IMAGE_PREFIX = "# vllm-image: "
DIGEST_PREFIX = "# inputs: "

Pins = dict[str, tuple[str, str]]
Item = Mapping[str, Any]
"""One ``install`` entry of pip's installation report."""


def read_pins(path: Path) -> Pins:
    """``{canonical name: (name as written, version)}`` of a requirements file of ``==`` pins."""
    pins: Pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{path.name}: not an exact pin: {line!r}")
        pins[canonicalize_name(name)] = (name.strip(), version.strip())
    return pins


def direct_needs() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*EVAL_NEEDS, *project["dependencies"]]


def vllm_version() -> str:
    """The vLLM release of the eval image's base (its ``FROM vllm/vllm-openai:v<version>``)."""
    match = re.search(r"^FROM\s+\S*vllm/vllm-openai:v(\S+)", CONTAINERFILE.read_text(), re.M)
    if not match:
        raise SystemExit(f"{CONTAINERFILE}: no FROM vllm/vllm-openai:v<version>")
    return match[1]


def inputs_digest() -> str:
    """A digest of everything eval.txt is derived from; a change means eval.txt is stale."""
    main = sorted(f"{key}=={version}" for key, (_, version) in read_pins(HERE / "main.txt").items())
    inputs = {
        "vllm": vllm_version(),
        "python": PYTHON,
        "platforms": PLATFORMS,
        "abis": ABIS,
        "needs": direct_needs(),
        "main": main,
        "sdist_only": SDIST_ONLY,
    }
    blob = json.dumps(inputs, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]


# --- the resolution (needs the index) -------------------------------------------------------


def python312() -> str:
    """A CPython 3.12 interpreter for pip, so markers are evaluated as in the image.

    Raises:
        SystemExit: None found.
    """
    pyenv = Path.home() / ".pyenv" / "versions"
    candidates = [
        os.environ.get("LOCK_PYTHON"),
        shutil.which(f"python{PYTHON}"),  # may be a pyenv shim that refuses to run
        *sorted(map(str, pyenv.glob(f"{PYTHON}.*/bin/python{PYTHON}")), reverse=True),
    ]
    check = "import sys, platform; print(platform.python_implementation(), *sys.version_info[:2])"
    for candidate in filter(None, candidates):
        done = subprocess.run([candidate, "-c", check], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.split() == ["CPython", *PYTHON.split(".")]:
            return candidate
    raise SystemExit(
        f"lock_eval.py needs a CPython {PYTHON} interpreter (pip evaluates the image's "
        f"environment markers with the one it runs on): set LOCK_PYTHON=/path/to/python{PYTHON}"
    )


def _pip(venv: Path, *args: str) -> None:
    cmd = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-25:])
        raise SystemExit(f"pip {args[0]} failed:\n{tail}")


def resolve(
    venv: Path, work: Path, requirements: Iterable[str], constraints: Mapping[str, str]
) -> tuple[list[Item], dict[str, str]]:
    """pip's resolution of ``requirements`` for the image: (installed items, marker env)."""
    tag = f"r{len(list(work.glob('*.json')))}"
    (work / f"{tag}.in").write_text("".join(f"{r}\n" for r in requirements))
    (work / f"{tag}.constraints").write_text("".join(f"{c}\n" for c in constraints.values()))
    report = work / f"{tag}.json"
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    abi_args = [a for abi in ABIS for a in ("--abi", abi)]
    _pip(
        venv,
        "install",
        "--dry-run",
        "--quiet",
        "--ignore-installed",
        "--target",
        str(work / "target"),
        "--report",
        str(report),
        "--python-version",
        PYTHON,
        "--implementation",
        "cp",
        *abi_args,
        *platform_args,
        "--only-binary=:all:",
        "--find-links",
        str(work / "wheels"),
        "-r",
        str(work / f"{tag}.in"),
        "-c",
        str(work / f"{tag}.constraints"),
    )
    data = json.loads(report.read_text())
    return data["install"], data["environment"]


# --- deriving eval.txt (pure) ---------------------------------------------------------------


def by_name(items: Iterable[Item]) -> dict[str, Item]:
    return {canonicalize_name(i["metadata"]["name"]): i for i in items}


def version_of(item: Item) -> str:
    return str(item["metadata"]["version"])


def _applies(req: Requirement, extras: Iterable[str], env: Mapping[str, str]) -> bool:
    marker: Marker | None = req.marker
    return marker is None or any(
        marker.evaluate({**env, "extra": extra}) for extra in ("", *extras)
    )


def requirements_of(
    items: Mapping[str, Item], roots: Iterable[str], env: Mapping[str, str]
) -> dict[str, list[Requirement]]:
    """Each package's requirements that apply in the image, with the extras asked for
    (by ``roots``, the direct requirements, and by other packages' requirements)."""
    extras: dict[str, set[str]] = {key: set() for key in items}
    pending = [Requirement(root) for root in roots]
    applicable: dict[str, list[Requirement]] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    for req in pending:
        key = canonicalize_name(req.name)
        if key in extras:
            extras[key] |= {canonicalize_name(e) for e in req.extras}
    changed = True
    while changed:
        changed = False
        for key, item in items.items():
            state = (key, frozenset(extras[key]))
            if state in done:
                continue
            done.add(state)
            reqs = [
                r
                for r in map(Requirement, item["metadata"].get("requires_dist") or [])
                if _applies(r, extras[key], env)
            ]
            applicable[key] = reqs
            for r in reqs:
                target = canonicalize_name(r.name)
                new = {canonicalize_name(e) for e in r.extras} - extras.get(target, set())
                if target in extras and new:
                    extras[target] |= new
                    changed = True
    return applicable


def pip_check(
    installed: Mapping[str, Item], roots: Iterable[str], env: Mapping[str, str]
) -> list[str]:
    """What ``pip check`` would report in the image (and the requested extras' needs)."""
    problems = []
    versions = {key: Version(item["metadata"]["version"]) for key, item in installed.items()}
    reqs = requirements_of(installed, roots, env)
    reqs["<the eval image>"] = [Requirement(r) for r in roots]
    for key, applicable in reqs.items():
        for req in applicable:
            target = canonicalize_name(req.name)
            if target not in versions:
                problems.append(f"{key} requires {req}, which is not installed")
            elif not req.specifier.contains(versions[target], prereleases=True):
                problems.append(f"{key} requires {req}, but {versions[target]} is installed")
    return sorted(problems)


def derive(
    image: Mapping[str, Item],
    resolved: Mapping[str, Item],
    main: Pins,
    roots: Iterable[str],
    env: Mapping[str, str],
) -> dict[str, str]:
    """``{canonical name: eval.txt line}``: what ``resolved`` (the eval image) installs beyond
    ``image`` (the vLLM image), overrides marked with the requirement that forces them.

    Raises:
        SystemExit: A pin is not main.txt's, or an override has no requirer to explain it.
    """
    roots = list(roots)
    reqs = requirements_of(resolved, roots, env)
    reqs[""] = [Requirement(r) for r in roots]  # the eval image's own needs
    lines: dict[str, str] = {}
    for key, item in resolved.items():
        version = item["metadata"]["version"]
        shipped = image[key]["metadata"]["version"] if key in image else None
        if shipped == version:
            continue
        if key not in main or main[key][1] != version:
            found = main[key][1] if key in main else "nothing"
            raise SystemExit(f"the eval image needs {key}=={version}; main.txt pins {found}")
        line = f"{main[key][0]}=={version}"
        if shipped is not None:
            why = [
                (requirer, req)
                for requirer, applicable in sorted(reqs.items())
                for req in applicable
                if canonicalize_name(req.name) == key
                and not req.specifier.contains(Version(shipped), prereleases=True)
            ]
            if not why:
                raise SystemExit(f"{key}: {version} differs from the vLLM image's {shipped}")
            requirer, req = why[0]
            meta = resolved[requirer]["metadata"] if requirer else None
            who = f"{meta['name']} {meta['version']}" if meta else "the eval image"
            line += f"  # {OVERRIDE_NOTE} {shipped}: {who} needs {req.name}{req.specifier}"
        lines[key] = line
    return lines


def render(lines: Mapping[str, str], image: Mapping[str, Item], *, vllm: str, digest: str) -> str:
    """The text of requirements/eval.txt."""
    head = (
        f"# Exact pins the eval image adds (--no-deps) to vllm/vllm-openai:v{vllm} (CPython "
        f"{PYTHON}, manylinux x86_64, glibc 2.{GLIBC_MINOR}).\n"
        "# Generated by `.venv/bin/python requirements/lock_eval.py` (make lock; resolves with "
        "pip for that platform); do not edit.\n"
        f"{DIGEST_PREFIX}{digest}\n"
    )
    body = "".join(f"{lines[key]}\n" for key in sorted(lines))
    shipped = "".join(
        f"{IMAGE_PREFIX}{item['metadata']['name']}=={item['metadata']['version']}\n"
        for _, item in sorted(image.items())
    )
    tail = f"#\n# The vLLM image these pins were resolved against (vllm=={vllm} and its needs):\n"
    return head + body + tail + shipped


def lock() -> str:
    """Resolve, derive and check; the text of requirements/eval.txt."""
    vllm = vllm_version()
    main = read_pins(HERE / "main.txt")
    roots = direct_needs()
    with tempfile.TemporaryDirectory(prefix="lock-eval-") as tmp:
        work = Path(tmp)
        subprocess.run([python312(), "-m", "venv", str(work / "venv")], check=True)
        venv = work / "venv"
        sdists = [f"{main[k][0]}=={main[k][1]}" for k in map(canonicalize_name, SDIST_ONLY)]
        _pip(venv, "wheel", "--quiet", "--no-deps", "-w", str(work / "wheels"), *sdists)
        print(f"resolving vllm=={vllm} for CPython {PYTHON} ...", file=sys.stderr)
        image_items, env = resolve(venv, work, [f"vllm=={vllm}"], {})
        image = by_name(image_items)
        if env.get("python_version") != PYTHON:
            raise SystemExit(f"pip evaluated markers for Python {env.get('python_version')}")
        eval_side = {k: f"{n}=={v}" for k, (n, v) in main.items() if k not in image}
        everything = [f"vllm=={vllm}", *roots]
        print("resolving the eval image ...", file=sys.stderr)
        resolved = by_name(resolve(venv, work, everything, eval_side)[0])
        moved = {
            k
            for k in resolved
            if k in image and k in main and version_of(resolved[k]) != version_of(image[k])
        }
        if moved:  # the overrides: at main.txt's versions where that resolves
            pinned = {**eval_side, **{k: f"{main[k][0]}=={main[k][1]}" for k in moved}}
            print(f"resolving again with main.txt's {sorted(moved)} ...", file=sys.stderr)
            resolved = by_name(resolve(venv, work, everything, pinned)[0])
    lines = derive(image, resolved, main, roots, env)
    installed = {**image, **{k: resolved[k] for k in lines}}  # eval.txt over the vLLM image
    problems = pip_check(installed, everything, env)
    if problems:
        raise SystemExit("the eval image would fail `pip check`:\n" + "\n".join(problems))
    return render(lines, image, vllm=vllm, digest=inputs_digest())


def main() -> None:
    text = lock()
    OUTPUT.write_text(text)
    pins = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {pins} pins", file=sys.stderr)


if __name__ == "__main__":
    main()
