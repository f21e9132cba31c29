"""KServe modelcars: a stored model packaged as an OCI image and pushed to a registry.

A modelcar is an image whose ``/models`` folder holds the model. KServe runs it as a sidecar
of the predictor (``storageUri: oci://…``): the container runtime pulls it like any image
(cached on the node, layers shared between versions), and the sidecar runs
``sh -c "ln -sf /proc/$$/root/models /mnt/models && sleep infinity"`` so the server reads the
files through the shared process namespace (kserve ``pkg/webhook/admission/pod/
storage_initializer_injector.go``, ``createModelContainer``; its init container checks
``[ -d /models ]`` with ``sh`` too, ``createModelInitContainer``). So the base image needs a
shell, ``ln`` and ``sleep``: :data:`~modelgate.images.MODELCAR_BASE_IMAGE` is a pinned busybox.

How :func:`build_modelcar` builds one, as Kubeflow Hub's model registry client does
(kubeflow/hub ``clients/python/src/model_registry/utils.py``, ``save_to_oci_registry``):

1. copy the base image into an OCI layout folder with ``skopeo copy`` (every platform of a
   multi-platform base);
2. add each file of the model as its own uncompressed tar layer under ``/models`` with olot
   (``olot.basics.oci_layers_on_top``, ``root_dir`` keeps sub-folders), so weights are their
   own layers: a new version whose tokenizer did not change re-uses its layers, and the
   registry stores each file once;
3. annotate the manifest (and label the config) with where the model came from
   (:func:`annotations`);
4. push with ``skopeo copy --preserve-digests`` and read back the digest it wrote; the result
   is ``oci://<repository>@sha256:<digest>``, which names these exact bytes.

Credentials: a Docker config JSON (``{"auths": {…}}``) given as ``authfile`` (in the cluster,
the key ``.dockerconfigjson`` of a ``kubernetes.io/dockerconfigjson`` Secret mounted as a file)
is passed to skopeo with ``--authfile``; secrets never appear on a command line. TLS is always
verified except for a registry on the loopback interface (``localhost``, ``127.0.0.1``,
``[::1]``), which is reached over plain HTTP (tests, benchmarks).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from modelgate import __version__
from modelgate.errors import ConfigError, ModelgateError
from modelgate.storage import (
    MARKER,
    STORE_SCHEMES,
    fetched,
    read_marker,
    scheme_of,
    work_dir,
)

logger = logging.getLogger(__name__)


class ModelcarError(ModelgateError):
    """skopeo is missing, or building or pushing the modelcar failed (the message says how)."""


#: Where the model's files are in the image (KServe links ``/proc/<pid>/root/models``).
MODELS_DIR = "/models"
#: Files of a stored folder that describe it to modelgate (store marker): not packaged.
SKIPPED_FILES = frozenset({MARKER})

# OCI image-spec annotations.md: the pre-defined keys where they fit, modelgate's own beside.
ANNOTATION_SOURCE = "org.opencontainers.image.source"
ANNOTATION_REVISION = "org.opencontainers.image.revision"
ANNOTATION_TITLE = "org.opencontainers.image.title"
ANNOTATION_DESCRIPTION = "org.opencontainers.image.description"
ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_QUANT_SCHEME = "modelgate.quant_scheme"
ANNOTATION_MODELGATE_VERSION = "modelgate.version"
ANNOTATION_MODEL_URI = "modelgate.model_uri"

#: Longest annotation value written (model records are untrusted input).
MAX_ANNOTATION_CHARS = 512
#: Largest modelgate record (download manifest, quantization record) read for metadata.
MAX_RECORD_BYTES = 1 << 20
#: Hosts pushed to over plain HTTP without TLS verification: the loopback interface only.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]"})
#: The skopeo release the images ship (Debian bookworm); older ones lack ``--digestfile``.
SKOPEO_FIX = "install skopeo (Debian/Ubuntu: apt-get install skopeo; it is in the modelgate image)"
#: Modification time given to the files of a downloaded (``s3://``) model before they are put
#: in layers: tar headers carry it, so each download would make new layer digests; with a fixed
#: time the same file makes the same layer, which the registry and nodes store once. (A
#: ``file://`` store or local folder is read in place: its files keep their times.)
STORED_MTIME = 0
#: Retries skopeo makes on a failed registry request (its own ``--retry-times``).
SKOPEO_RETRIES = 3

# distribution/reference grammar (reference.go): a registry host with an optional port, then
# lower-case path components. A tag is [\w][\w.-]{0,127}.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:]+\])(?::[0-9]{{1,5}})?"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^(?P<host>{_HOST})/(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_WRITER = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class Modelcar:
    """A pushed modelcar.

    Attributes:
        repository: Where it was pushed, ``registry[:port]/path``.
        tag: The tag pushed with it.
        digest: ``sha256:…`` of the pushed manifest (or index, for a multi-platform base).
        annotations: The manifest annotations written.
        files: Paths of the model files under ``/models``, each its own layer.
        bytes: Total size of the model files.
        seconds: Build and push time.
    """

    repository: str
    tag: str
    digest: str
    annotations: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def uri(self) -> str:
        """``oci://<repository>@sha256:…``: the storageUri KServe serves these bytes from."""
        return f"oci://{self.repository}@{self.digest}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, with :attr:`uri`."""
        return {**asdict(self), "uri": self.uri}


def check_repository(repository: str) -> str:
    """``repository`` without a leading ``oci://`` or ``docker://``, checked.

    Raises:
        ConfigError: Not ``registry[:port]/path`` in lower case, or it carries a tag or digest.
    """
    text = repository.strip()
    for prefix in ("oci://", "docker://"):
        text = text.removeprefix(prefix)
    match = _REPOSITORY.match(text)
    if match is None or "@" in text:
        raise ConfigError(
            f"modelcar repository {repository!r} is not registry/path, e.g. "
            "quay.io/org/models or 127.0.0.1:5000/models (lower case, registry host first, "
            "no tag or digest: give the tag with --tag)"
        )
    host = match.group("host")
    if "." not in host and ":" not in host and host != "localhost":
        raise ConfigError(
            f"modelcar repository {repository!r} names no registry host: write it in full, "
            f"e.g. docker.io/{text}"
        )
    return text


def check_tag(tag: str) -> str:
    """``tag`` if it is a valid image tag.

    Raises:
        ConfigError: Not ``[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}``.
    """
    if not _TAG.match(tag):
        raise ConfigError(
            f"image tag {tag!r} is invalid: use letters, digits, '_', '.', '-' "
            "(not first), at most 128 characters"
        )
    return tag


def default_tag(model: str) -> str:
    """A tag from the model's folder name (e.g. ``W4A16-3f2a…`` for a stored candidate), or
    ``latest`` when nothing of it is usable. An S3 store's writer folder (``<key>/<32 hex>``,
    see :mod:`modelgate.storage`) is skipped for its key's name."""
    path = Path(model.rstrip("/").split("://", 1)[-1])
    name = path.parent.name if _WRITER.match(path.name) and path.parent.name else path.name
    tag = re.sub(r"[^\w.-]", "-", name).lstrip(".-")[:128]
    return tag if tag and _TAG.match(tag) else "latest"


def is_loopback(repository: str) -> bool:
    """Whether ``repository`` is on a registry on this machine's loopback interface."""
    host = repository.split("/", 1)[0]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return host in LOOPBACK_HOSTS


def skopeo() -> str:
    """The skopeo executable.

    Raises:
        ModelcarError: It is not on ``PATH`` (one line naming the fix).
    """
    path = shutil.which("skopeo")
    if path is None:
        raise ModelcarError(f"skopeo is not on PATH: {SKOPEO_FIX}")
    return path


def _clean(value: object) -> str:
    text = _CONTROL.sub(" ", str(value)).strip()
    return text[:MAX_ANNOTATION_CHARS]


def _record(folder: Path, name: str) -> dict[str, Any]:
    """A modelgate record of the model folder (untrusted: size-bounded, must be an object)."""
    path = folder / name
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return {}
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        logger.warning("ignoring unreadable %s in %s", name, folder)
        return {}
    return data if isinstance(data, dict) else {}


def modelcar_annotations(
    folder: Path,
    *,
    model_uri: str,
    base_image: str,
    repo_id: str | None = None,
    commit_sha: str | None = None,
    scheme: str | None = None,
    source_url: str | None = None,
) -> dict[str, str]:
    """The manifest annotations of the modelcar of ``folder``.

    Given values win; missing ones come from the folder's own records (the download manifest
    ``modelgate-manifest.json``: repository, commit, hub; the quantization record
    ``modelgate-quantization.json``: scheme). Values are single-line and at most
    :data:`MAX_ANNOTATION_CHARS` long; an unknown one is left out.

    Keys: ``org.opencontainers.image.source`` (the Hub page of the source repository),
    ``.revision`` (its commit), ``.title``, ``.description``, ``.base.name``; and
    ``modelgate.quant_scheme``, ``modelgate.version``, ``modelgate.model_uri`` (the stored
    model's URI; a local folder's path and a local base layout are left out).
    """
    from modelgate.download import MANIFEST_NAME
    from modelgate.quantize import RECORD_NAME

    downloaded = _record(folder, MANIFEST_NAME)
    quantized = _record(folder, RECORD_NAME)
    repo = repo_id or downloaded.get("repo_id")
    commit = commit_sha or downloaded.get("commit_sha")
    quant = scheme or quantized.get("scheme")
    if source_url is None and isinstance(repo, str) and repo:
        endpoint = downloaded.get("endpoint")
        hub = endpoint if isinstance(endpoint, str) and endpoint.startswith("http") else None
        source_url = f"{(hub or 'https://huggingface.co').rstrip('/')}/{repo}"
    found: dict[str, object] = {
        ANNOTATION_SOURCE: source_url,
        ANNOTATION_REVISION: commit,
        ANNOTATION_TITLE: repo,
        ANNOTATION_DESCRIPTION: (
            f"KServe modelcar of {repo}" + (f" ({quant})" if quant else "") if repo else None
        ),
        # a local layout (oci:<folder>) or folder is a path of this machine: not recorded
        ANNOTATION_BASE_NAME: None
        if base_image.startswith("oci:")
        else base_image.removeprefix("docker://"),
        ANNOTATION_QUANT_SCHEME: quant,
        ANNOTATION_MODELGATE_VERSION: __version__,
        ANNOTATION_MODEL_URI: model_uri if scheme_of(model_uri) else None,
    }
    return {k: _clean(v) for k, v in found.items() if isinstance(v, str) and _clean(v)}


def model_files(folder: Path, *, listed: list[str] | None = None) -> list[Path]:
    """The files of a model folder to package, sorted; the store marker is left out, and for a
    stored folder so is anything its marker does not list (``listed``).

    Raises:
        ConfigError: The folder holds a symbolic link (a Hub cache snapshot: copy it with
            ``cp -rL`` first) or no file, or a path olot cannot put in a layer.
    """
    files: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            raise ConfigError(
                f"{path} is a symbolic link: modelcars hold files only; copy the model with "
                "its links followed (cp -rL) and package the copy"
            )
        if path.is_file() and not (path.parent == folder and path.name in SKIPPED_FILES):
            rel = path.relative_to(folder).as_posix()
            if listed is not None and rel not in listed:
                continue
            if _CONTROL.search(rel):
                raise ConfigError(f"{folder}: file name {rel!r} has control characters")
            files.append(path)
    if not files:
        raise ConfigError(f"{folder} holds no file to package")
    return files


def _run(args: list[str], *, what: str) -> None:
    """Run skopeo; a failure raises with the end of its error output (never credentials:
    they are only in the auth file)."""
    logger.debug("running %s", " ".join(args))
    try:
        subprocess.run(args, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise ModelcarError(f"skopeo is not on PATH: {SKOPEO_FIX}") from e
    except subprocess.CalledProcessError as e:
        lines = [ln.strip() for ln in (e.stderr or e.stdout or "").splitlines() if ln.strip()]
        reason = " ".join(lines[-2:])[-600:] or f"exit status {e.returncode}"
        raise ModelcarError(f"{what} failed: {reason}") from e


def _tls(flag: str, reference: str) -> list[str]:
    """``--src-tls-verify=false``/``--dest-tls-verify=false`` for a loopback registry only."""
    return [f"--{flag}-tls-verify=false"] if is_loopback(reference) else []


def _base_reference(base_image: str) -> tuple[str, list[str]]:
    """The skopeo source of the base image: a local OCI layout (``oci:<folder>[:tag]``) or an
    image in a registry (``docker://…`` or a bare reference)."""
    if base_image.startswith("oci:"):
        return base_image, []
    ref = base_image.removeprefix("docker://")
    return f"docker://{ref}", _tls("src", ref)


def _check_authfile(authfile: str | os.PathLike[str] | None) -> list[str]:
    if authfile is None or str(authfile) == "":
        return []
    path = Path(authfile)
    try:
        data = json.loads(path.read_bytes()[:MAX_RECORD_BYTES])
    except (OSError, ValueError) as e:
        raise ConfigError(
            f"auth file {str(authfile)!r} is not a readable Docker config JSON "
            f"({type(e).__name__}): give one with an 'auths' mapping (docker/podman login "
            "writes it)"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("auths"), dict):
        raise ConfigError(
            f"auth file {str(authfile)!r} has no 'auths' mapping: give a Docker config JSON "
            "(the .dockerconfigjson key of a kubernetes.io/dockerconfigjson Secret)"
        )
    return ["--authfile", str(path)]


@contextlib.contextmanager
def _model_folder(model: str) -> Iterator[tuple[Path, list[str] | None]]:
    """A local folder with the model, and the files its store marker lists: a stored folder
    (``s3://`` downloaded for the block, ``file://`` in place, checked against its marker) or
    a plain local folder (None: every file)."""
    scheme = scheme_of(model)
    if scheme in STORE_SCHEMES:
        with fetched(model) as folder:
            listed = [f.path for f in read_marker((folder / MARKER).read_text(), uri=model)]
            if scheme != "file":  # a fresh download: give its files fixed times (see below)
                for name in listed:
                    os.utime(folder / name, (STORED_MTIME, STORED_MTIME))
            yield folder, listed
        return
    if scheme:
        raise ConfigError(
            f"cannot package {model!r}: expected a stored model (s3:// or file://) or a folder"
        )
    folder = Path(model)
    if not folder.is_dir():
        raise ConfigError(f"model {model!r} does not exist or is not a folder")
    yield folder, None


def build_modelcar(
    model: str,
    *,
    repository: str,
    base_image: str | None = None,
    tag: str | None = None,
    authfile: str | os.PathLike[str] | None = None,
    repo_id: str | None = None,
    commit_sha: str | None = None,
    scheme: str | None = None,
) -> Modelcar:
    """Package a model as a KServe modelcar and push it; see the module docstring for how.

    Args:
        model: A stored model (``s3://…``, ``file://…``: only the files its marker lists) or a
            local model folder.
        repository: Where to push, ``registry[:port]/path`` (no tag).
        base_image: Image with a shell to put the model on: a reference (``docker://`` optional)
            or a local OCI layout ``oci:<folder>[:tag]`` (None:
            :data:`~modelgate.images.MODELCAR_BASE_IMAGE`).
        tag: Tag to push (None: :func:`default_tag` of the model's folder name).
        authfile: Docker config JSON with the registry's credentials (None: skopeo's default,
            ``$REGISTRY_AUTH_FILE`` or ``${XDG_RUNTIME_DIR}/containers/auth.json``).
        repo_id: Hub repository of the model (None: from the folder's download manifest).
        commit_sha: Its commit (None: from the download manifest).
        scheme: Quantization scheme (None: from the folder's quantization record).

    Returns:
        The pushed modelcar; its :attr:`~Modelcar.uri` is ``oci://<repository>@sha256:…``.

    Raises:
        ConfigError: A bad repository, tag, auth file or model (nothing is pushed).
        StorageError: The stored model is incomplete or could not be fetched.
        ModelcarError: skopeo is missing, or pulling the base, building or pushing failed.
    """
    from modelgate.images import MODELCAR_BASE_IMAGE

    started = time.monotonic()
    repository = check_repository(repository)
    base = base_image or MODELCAR_BASE_IMAGE
    auth = _check_authfile(authfile)
    push_tag = check_tag(tag) if tag else default_tag(model)
    tool = skopeo()
    with _model_folder(model) as (folder, listed):
        files = model_files(folder, listed=listed)
        total = sum(f.stat().st_size for f in files)
        notes = modelcar_annotations(
            folder,
            model_uri=model,
            base_image=base,
            repo_id=repo_id,
            commit_sha=commit_sha,
            scheme=scheme,
        )
        with tempfile.TemporaryDirectory(prefix="modelcar-", dir=work_dir()) as tmp:
            layout = Path(tmp) / "layout"
            source, src_tls = _base_reference(base)
            _run(
                [tool, "copy", "--multi-arch", "all", "--remove-signatures", "--retry-times",
                 str(SKOPEO_RETRIES), *auth, *src_tls, source, f"oci:{layout}:latest"],
                what=f"copying the base image {base}",
            )  # fmt: skip
            _add_layers(layout, files, folder=folder, notes=notes)
            digest = _push(tool, layout, f"{repository}:{push_tag}", auth=auth, tmp=Path(tmp))
    car = Modelcar(
        repository=repository,
        tag=push_tag,
        digest=digest,
        annotations=notes,
        files=[f.relative_to(folder).as_posix() for f in files],
        bytes=total,
        seconds=round(time.monotonic() - started, 3),
    )
    logger.info(
        "pushed modelcar %s (%d files, %.1f MB) in %.1fs",
        car.uri,
        len(files),
        car.bytes / 1e6,
        car.seconds,
    )
    return car


def _add_layers(layout: Path, files: list[Path], *, folder: Path, notes: Mapping[str, str]) -> None:
    """One layer per file under ``/models`` (sub-folders kept), with the annotations on the
    manifest and as labels of the image config."""
    from olot.basics import oci_layers_on_top

    try:
        oci_layers_on_top(
            layout, files, root_dir=folder, annotations=dict(notes), labels=dict(notes)
        )
    except (OSError, ValueError) as e:
        raise ModelcarError(f"adding the model's layers failed: {e}") from e


def _push(tool: str, layout: Path, reference: str, *, auth: list[str], tmp: Path) -> str:
    """Push the layout to ``reference`` (``repository:tag``); the digest pushed."""
    digest_file = tmp / "digest"
    _run(
        [tool, "copy", "--multi-arch", "all", "--preserve-digests", "--retry-times",
         str(SKOPEO_RETRIES), "--digestfile", str(digest_file), *auth, *_tls("dest", reference),
         f"oci:{layout}:latest", f"docker://{reference}"],
        what=f"pushing the modelcar to {reference}",
    )  # fmt: skip
    digest = digest_file.read_text().strip() if digest_file.is_file() else ""
    if not _DIGEST.match(digest):
        raise ModelcarError(f"pushing to {reference}: skopeo reported no sha256 digest")
    return digest


__all__ = [
    "ANNOTATION_MODELGATE_VERSION",
    "ANNOTATION_QUANT_SCHEME",
    "ANNOTATION_REVISION",
    "ANNOTATION_SOURCE",
    "MODELS_DIR",
    "Modelcar",
    "ModelcarError",
    "build_modelcar",
    "check_repository",
    "check_tag",
    "default_tag",
    "is_loopback",
    "model_files",
    "modelcar_annotations",
    "skopeo",
]
