"""images/ and requirements/: Containerfiles install only the locks, and the locks pass pip check.

The pip check is emulated from installed metadata (no image can be built here): the eval image
is vllm.txt (read from ``.venv-vllm``) plus eval.txt and modelgate (read from ``.venv``, which
runs these tests); the base image is main.txt plus torch and modelgate.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "requirements"
CONTAINERFILES = {
    "base": REPO / "images" / "base" / "Containerfile",
    "eval": REPO / "images" / "eval" / "Containerfile",
}
VLLM_VENV = REPO / ".venv-vllm"
#: Extras the images ask for: the eval image installs what ``lm-eval[api]`` needs.
REQUESTED_EXTRAS = {"lm-eval": {"api"}}
#: The vLLM image installs these outside vllm.txt: torch (and its CUDA companions, which the
#: Makefile removes from the CPU .venv-vllm) before it, pip and setuptools with Python.
VLLM_IMAGE_UNLOCKED = {"torch", "torchvision", "torchaudio", "torchcodec", "triton"} | {
    "pip",
    "setuptools",
}
OVERRIDE = re.compile(r"#\s*overrides vllm\.txt ")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")

Metadata = Callable[[str], tuple[str, list[str]]]


# --- requirements files ---------------------------------------------------------------------


def pin_lines(path: Path) -> dict[str, tuple[str, str, str]]:
    """``{canonical name: (name, version, full line)}``; fails on anything but exact pins."""
    pins: dict[str, tuple[str, str, str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        spec = line.split(" #", 1)[0].strip()
        match = PIN.match(spec)
        assert match, f"{path.name}:{number} is not an exact name==version pin: {line!r}"
        key = canonicalize_name(match[1])
        assert key not in pins, f"{path.name}:{number} pins {match[1]} twice"
        pins[key] = (match[1], match[2], line)
    return pins


def versions(path: Path) -> dict[str, str]:
    return {key: version for key, (_, version, _) in pin_lines(path).items()}


def load_lock_eval():
    spec = importlib.util.spec_from_file_location("lock_eval", REQUIREMENTS / "lock_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_eval_txt_pins_exactly_main_txt_versions():
    main = versions(REQUIREMENTS / "main.txt")
    text = (REQUIREMENTS / "eval.txt").read_text()
    assert text.startswith("#") and "lock_eval.py" in text.splitlines()[1], "header missing"
    pins = pin_lines(REQUIREMENTS / "eval.txt")
    assert len(pins) > 10
    for key, (name, version, _) in pins.items():
        assert key in main, f"eval.txt pins {name}, which main.txt does not"
        assert version == main[key], f"eval.txt pins {name}=={version}, main.txt {main[key]}"
    for need in ("lm-eval", "kfp", "kfp-kubernetes", "boto3"):
        assert need in pins, f"eval.txt lacks {need}"


def test_eval_txt_leaves_vllm_packages_to_the_vllm_image_unless_a_requirement_forces_it():
    """A vllm.txt package is in eval.txt only as a marked override its requirers need."""
    vllm = versions(REQUIREMENTS / "vllm.txt")
    pins = pin_lines(REQUIREMENTS / "eval.txt")
    for key, (name, _, line) in pins.items():
        if key not in vllm:
            assert not OVERRIDE.search(line), f"{name} overrides nothing: {line!r}"
            continue
        assert OVERRIDE.search(line), f"eval.txt lists {name}, which the vLLM image ships"
        # the override is needed: vllm.txt's version breaks an eval.txt package's requirement
        broken = [
            f"{other} needs {req}"
            for other, (other_name, _, _) in pins.items()
            for req in applicable(local_metadata(other_name)[1], extras_of(other))
            if canonicalize_name(req.name) == key
            and not req.specifier.contains(vllm[key], prereleases=True)
        ]
        assert broken, f"{name}: vllm.txt's {vllm[key]} meets every requirement; drop the override"


def test_eval_txt_is_what_lock_eval_writes():
    assert (REQUIREMENTS / "eval.txt").read_text() == load_lock_eval().render(), (
        "requirements/eval.txt is stale: run `.venv/bin/python requirements/lock_eval.py`"
    )


# --- Containerfiles -------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    assert not current, f"{path}: dangling line continuation"
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1].strip()) for text in logical]


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a RUN line, split on ``&&``, ``||`` and ``;``."""
    return [shlex.split(part) for part in re.split(r"&&|\|\||;", run) if part.strip()]


def pip_args(command: list[str], verb: str) -> list[str] | None:
    """Arguments after ``pip <verb>`` (or ``python -m pip <verb>``), None if not that command."""
    for i, word in enumerate(command[:-1]):
        if (word == "pip" or word.endswith("/pip") or re.fullmatch(r"pip3(\.\d+)?", word)) and (
            command[i + 1] == verb
        ):
            return command[i + 2 :]
    return None


def check_pip_install(args: list[str]) -> str | None:
    """Why this ``pip install`` may pull unpinned packages, or None if it installs only locks."""
    if args == ["${TORCH_SPEC}"]:
        return None
    if "--no-deps" not in args:
        return "without --no-deps"
    rest = [a for a in args if a != "--no-deps"]
    if rest == ["."]:
        return None
    if len(rest) == 2 and rest[0] == "-r" and re.fullmatch(r"requirements/[\w.-]+\.txt", rest[1]):
        if not (REPO / rest[1]).is_file():
            return f"{rest[1]} does not exist"
        return None
    return f"installs {rest}, not requirements/*.txt or the project"


@pytest.mark.parametrize("image", sorted(CONTAINERFILES))
def test_containerfile_installs_only_locks_and_runs_pip_check(image):
    path = CONTAINERFILES[image]
    steps = instructions(path)
    copied = " ".join(args for op, args in steps if op == "COPY")
    installs, checks = [], 0
    for op, args in steps:
        if op != "RUN":
            continue
        for command in shell_commands(args):
            if (install := pip_args(command, "install")) is not None:
                installs.append(install)
                problem = check_pip_install(install)
                assert problem is None, f"{path.name} ({image}): pip install {problem}: {args}"
                lock = next((a for a in install if a.startswith("requirements/")), None)
                assert lock is None or lock in copied, f"{lock} is installed but never COPYed"
            checks += pip_args(command, "check") == []
    assert any("-r" in install for install in installs), f"{image}: installs no lock"
    assert checks, f"{image} image never runs `pip check`"
    last_install = max(i for i, (op, a) in enumerate(steps) if op == "RUN" and "install" in a)
    last_check = max(i for i, (op, a) in enumerate(steps) if op == "RUN" and "pip check" in a)
    assert last_check > last_install, f"{image}: `pip check` must follow every install"


@pytest.mark.parametrize("image", sorted(CONTAINERFILES))
def test_containerfile_is_pinned_and_non_root(image):
    path = CONTAINERFILES[image]
    text = path.read_text()
    assert ":latest" not in text
    steps = instructions(path)
    for op, args in steps:
        if op == "FROM":
            ref = args.split()[0]
            assert "@sha256:" in ref or ":" in ref.rsplit("/", 1)[-1], f"untagged {ref}"
            assert not ref.endswith(":latest")
    users = [args for op, args in steps if op == "USER"]
    assert users, f"{image} image has no USER"
    assert users[-1] == "1001", f"{image} image runs as {users[-1]!r}, not uid 1001"
    assert "--uid 1001" in text


def test_eval_image_uses_the_serving_runtime_vllm_tag():
    runtime = yaml.safe_load((REPO / "manifests" / "base" / "servingruntime.yaml").read_text())
    image = runtime["spec"]["containers"][0]["image"]
    froms = [a.split()[0] for op, a in instructions(CONTAINERFILES["eval"]) if op == "FROM"]
    assert froms == [f"docker.io/{image}"]


def test_check_pip_install_rejects_unpinned_installs():
    assert check_pip_install(["lm-eval[api]==0.4.13", "typer"]) == "without --no-deps"
    assert check_pip_install(["--no-deps", "typer"]) is not None
    assert check_pip_install(["--no-deps", "-r", "requirements/missing.txt"]) is not None
    assert check_pip_install(["--no-deps", "-r", "requirements/eval.txt"]) is None
    assert check_pip_install(["--no-deps", "."]) is None


# --- pip check emulation --------------------------------------------------------------------


def local_metadata(name: str) -> tuple[str, list[str]]:
    dist = importlib.metadata.distribution(name)
    return dist.version, list(dist.requires or [])


def vllm_site_metadata() -> dict[str, tuple[str, list[str]]]:
    sites = sorted(VLLM_VENV.glob("lib/python*/site-packages"))
    if not sites:
        pytest.skip(f"{VLLM_VENV} is absent (make venvs): cannot read vllm.txt's metadata")
    found = {}
    for path in sites[0].glob("*.dist-info/METADATA"):
        meta = email.parser.Parser().parsestr(path.read_text(errors="replace"), headersonly=True)
        found[canonicalize_name(meta["Name"])] = (
            meta["Version"],
            meta.get_all("Requires-Dist") or [],
        )
    return found


def extras_of(key: str) -> set[str]:
    return set(REQUESTED_EXTRAS.get(key, ()))


def applicable(requires: list[str], extras: set[str]) -> list[Requirement]:
    """Requirements whose markers hold here, for the base package plus ``extras``."""
    reqs = []
    for req in map(Requirement, requires):
        marker: Marker | None = req.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in ("", *extras)):
            reqs.append(req)
    return reqs


def pip_check(
    installed: dict[str, str],
    metadata: Metadata,
    judged: Callable[[str, str], bool] = lambda requirer, required: True,
) -> list[str]:
    """What ``pip check`` would report, plus requirements of extras that were asked for.

    ``installed`` maps canonical names to versions; ``metadata(name)`` gives a package's
    ``(version, Requires-Dist)``; ``judged(requirer, required)`` says whether to check it.
    """
    extras = {key: extras_of(key) for key in installed}
    problems: set[str] = set()
    done: set[tuple[str, frozenset[str]]] = set()
    pending = list(installed)
    while pending:
        key = pending.pop()
        if (key, frozenset(extras[key])) in done:
            continue
        done.add((key, frozenset(extras[key])))
        version, requires = metadata(key)
        assert version == installed[key], f"{key}: metadata is {version}, lock {installed[key]}"
        for req in applicable(requires, extras[key]):
            target = canonicalize_name(req.name)
            if not judged(key, target):
                continue
            if target not in installed:
                problems.add(f"{key} {version} requires {req}, which is not installed")
                continue
            if not req.specifier.contains(Version(installed[target]), prereleases=True):
                problems.add(
                    f"{key} {version} requires {req}, but {installed[target]} is installed"
                )
            new = {canonicalize_name(e) for e in req.extras} - extras[target]
            if new:
                extras[target] |= new
                pending.append(target)
    return sorted(problems)


def test_pip_check_emulation_finds_conflicts():
    meta = {
        "a": ("1.0", ["b>=2", "c; extra == 'x'", "d[y]"]),
        "b": ("1.5", []),
        "d": ("1.0", ["e; extra == 'y'", "f; python_version < '3'"]),
    }
    problems = pip_check({"a": "1.0", "b": "1.5", "d": "1.0"}, meta.__getitem__)
    assert problems == [
        "a 1.0 requires b>=2, but 1.5 is installed",
        'd 1.0 requires e; extra == "y", which is not installed',
    ]


def test_eval_image_passes_pip_check():
    vllm_meta = vllm_site_metadata()
    vllm = versions(REQUIREMENTS / "vllm.txt")
    evals = versions(REQUIREMENTS / "eval.txt")
    installed = {**vllm, **evals, "modelgate": importlib.metadata.version("modelgate")}
    # what the vLLM image brings outside vllm.txt, at .venv-vllm's versions where it has them
    for key in VLLM_IMAGE_UNLOCKED & set(vllm_meta):
        installed.setdefault(key, vllm_meta[key][0])
    eval_side = set(evals) | {"modelgate"}

    def metadata(key: str) -> tuple[str, list[str]]:
        if key in eval_side:
            return local_metadata(key)
        assert key in vllm_meta, f"{key} (vllm.txt) is not installed in {VLLM_VENV}"
        return vllm_meta[key]

    def judged(requirer: str, required: str) -> bool:
        # the vLLM image's own needs of what no lock lists are that image's business
        return requirer in eval_side or required not in VLLM_IMAGE_UNLOCKED

    problems = pip_check(installed, metadata, judged)
    assert not problems, "the eval image would fail `pip check`:\n" + "\n".join(problems)


def test_base_image_passes_pip_check():
    installed = versions(REQUIREMENTS / "main.txt")
    assert "torch" not in installed, "torch is installed by TORCH_SPEC, not main.txt"
    for key in ("torch", "pip", "setuptools", "modelgate"):
        installed[key] = importlib.metadata.version(key)
    problems = pip_check(installed, local_metadata)
    assert not problems, "the base image would fail `pip check`:\n" + "\n".join(problems)


# --- image names ----------------------------------------------------------------------------


def images_in_subprocess(**env: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MODELGATE_IMAGE_")}
    environ.update(env, PYTHONPATH=os.pathsep.join(["src", "."]))
    code = (
        "import json; from modelgate import images as i; "
        "print(json.dumps({'base': i.BASE_IMAGE, 'eval': i.EVAL_IMAGE, 'registry': i.REGISTRY}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=environ, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_image_registry_and_tag_follow_the_environment():
    images = images_in_subprocess(
        MODELGATE_IMAGE_REGISTRY="reg.example.com/team", MODELGATE_IMAGE_TAG="1.2.3"
    )
    assert images == {
        "base": "reg.example.com/team/modelgate:1.2.3",
        "eval": "reg.example.com/team/modelgate-eval:1.2.3",
        "registry": "reg.example.com/team",
    }


def test_image_defaults_are_ghcr_and_the_package_version():
    from modelgate import __version__

    images = images_in_subprocess()
    assert images == {
        "base": f"ghcr.io/modelgate/modelgate:{__version__}",
        "eval": f"ghcr.io/modelgate/modelgate-eval:{__version__}",
        "registry": "ghcr.io/modelgate",
    }
