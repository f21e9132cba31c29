"""An OCI registry on loopback and a tiny modelcar base image, for tests and benchmarks.

:func:`oci_registry` runs the Distribution registry (Debian's ``docker-registry`` package,
``/usr/bin/docker-registry``) on a free 127.0.0.1 port with a temporary ``config.yml`` and
storage folder, over plain HTTP (:mod:`modelgate.modelcar` pushes to loopback without TLS).

:func:`busybox_base_layout` writes an OCI image layout of a one-layer image holding a static
busybox (Debian's ``busybox-static``) and the applets KServe's modelcar containers call
(``sh``, ``ln``, ``sleep``, ``ls``, ``echo``, ``[``): what no test here can pull from a registry.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

from modelgate.processes import free_port
from modelgate.testing.servers import http_server

#: Where Debian installs the registry (package ``docker-registry``).
REGISTRY_BINARY = "docker-registry"
#: Debian's statically linked busybox (package ``busybox-static``).
BUSYBOX = "/bin/busybox"
#: Applets linked in the base image: what KServe's modelcar and modelcar-init containers run.
APPLETS = ("sh", "ln", "sleep", "ls", "echo", "[", "test", "cat")

_CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: modelgate-test-registry
"""


def registry_missing() -> str | None:
    """Why :func:`oci_registry` cannot run here (None: it can)."""
    if shutil.which(REGISTRY_BINARY) is None:
        return f"{REGISTRY_BINARY} is not installed (apt-get install docker-registry)"
    return None


def skopeo_missing() -> str | None:
    """Why skopeo cannot run here (None: it can)."""
    if shutil.which("skopeo") is None:
        return "skopeo is not installed (apt-get install skopeo)"
    return None


def busybox_missing() -> str | None:
    """Why :func:`busybox_base_layout` cannot run here (None: it can)."""
    if not Path(BUSYBOX).is_file():
        return f"{BUSYBOX} is missing (apt-get install busybox-static)"
    return None


@contextlib.contextmanager
def oci_registry(work: Path, *, timeout: float = 30.0) -> Iterator[str]:
    """A registry on ``127.0.0.1:<free port>`` storing under ``work``; yields ``host:port``.

    Raises:
        RuntimeError: The registry binary is missing, or it exited before it answered
            (with the end of its log).
        TimeoutError: ``GET /v2/`` did not answer 200 within ``timeout``.
    """
    reason = registry_missing()
    if reason is not None:
        raise RuntimeError(reason)
    port = free_port()
    root = work / "registry-data"
    root.mkdir(parents=True, exist_ok=True)
    config = work / "registry-config.yml"
    config.write_text(_CONFIG.format(root=root, port=port))
    address = f"127.0.0.1:{port}"
    with http_server(
        [str(shutil.which(REGISTRY_BINARY)), "serve", str(config)],
        url=f"http://{address}",
        log_path=work / "registry.log",
        what="docker-registry",
        timeout=timeout,
        health="/v2/",
    ):
        yield address


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return f"sha256:{digest}", len(data)


def _busybox_layer() -> bytes:
    """A tar of ``bin/busybox`` and its applet links, with fixed owners and times."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name in ("bin", "tmp"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
        data = Path(BUSYBOX).read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for applet in APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    return raw.getvalue()


def busybox_base_layout(dest: Path, *, tag: str = "latest") -> str:
    """Write an OCI image layout of a busybox image (linux/amd64) into ``dest``; returns its
    skopeo reference ``oci:<dest>:<tag>``, to pass as a modelcar's base image.

    Raises:
        RuntimeError: :data:`BUSYBOX` is missing.
    """
    reason = busybox_missing()
    if reason is not None:
        raise RuntimeError(reason)
    (dest / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    tar = _busybox_layer()
    layer, layer_size = _blob(dest, gzip.compress(tar, mtime=0))
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
        "history": [{"created_by": "modelgate.testing.oci_registry busybox base"}],
    }
    config_digest, config_size = _blob(dest, json.dumps(config).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": layer,
                "size": layer_size,
            }
        ],
    }
    manifest_digest, manifest_size = _blob(dest, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (dest / "index.json").write_text(json.dumps(index))
    return f"oci:{dest}:{tag}"


def pull_layout(reference: str, dest: Path) -> Path:
    """Copy the image ``reference`` (``host:port/repo@sha256:…`` on a loopback registry) into
    an OCI layout at ``dest`` with skopeo, digests and uncompressed layers kept.

    Raises:
        subprocess.CalledProcessError: skopeo failed.
    """
    subprocess.run(
        ["skopeo", "copy", "--src-tls-verify=false", "--multi-arch", "all",
         "--preserve-digests", "--dest-oci-accept-uncompressed-layers",
         f"docker://{reference}", f"oci:{dest}:pulled"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return dest


def image_manifests(layout: Path) -> list[dict]:
    """The image manifests of an OCI layout (through an index, if its root names one)."""
    blobs = layout / "blobs" / "sha256"

    def read(digest: str) -> dict:
        return json.loads((blobs / digest.removeprefix("sha256:")).read_bytes())

    found: list[dict] = []
    pending = list(json.loads((layout / "index.json").read_text())["manifests"])
    while pending:
        entry = pending.pop(0)
        doc = read(entry["digest"])
        if "manifests" in doc:
            pending.extend(doc["manifests"])
        else:
            found.append(doc)
    return found


def unpack_layers(layout: Path, manifest: dict, dest: Path) -> Path:
    """Apply the layers of ``manifest`` in order into ``dest`` (a root file system).

    Raises:
        ValueError: A member would land outside ``dest`` (tarfile's ``data`` filter).
    """
    blobs = layout / "blobs" / "sha256"
    dest.mkdir(parents=True, exist_ok=True)
    for layer in manifest["layers"]:
        with tarfile.open(blobs / layer["digest"].removeprefix("sha256:"), "r:*") as tar:
            tar.extractall(dest, filter="data")
    return dest


__all__ = [
    "APPLETS",
    "BUSYBOX",
    "busybox_base_layout",
    "busybox_missing",
    "image_manifests",
    "oci_registry",
    "pull_layout",
    "registry_missing",
    "skopeo_missing",
    "unpack_layers",
]
