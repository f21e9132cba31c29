"""Package component: the gated model as a KServe modelcar in an OCI registry."""

from typing import NamedTuple

from kfp import dsl

from modelgate.images import BASE_IMAGE

#: Where the pipeline mounts the registry credentials Secret (``modelcar_secret``); its key
#: ``.dockerconfigjson`` (a ``kubernetes.io/dockerconfigjson`` Secret) is the auth file.
AUTH_DIR = "/var/run/secrets/modelgate/modelcar"


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def package_modelcar(
    model_uri: str,
    repository: str,
    record: str = "",
    registry_url: str = "",
    tag: str = "",
    auth_dir: str = AUTH_DIR,
    base_image: str = "",
) -> NamedTuple("PackageOutputs", [("storage_uri", str), ("modelcar", str)]):
    """Build a KServe modelcar of the stored model, push it, and record it on the version;
    deploy serves it by digest.

    The files go under ``/models`` of a pinned busybox base, one layer each, with OCI
    annotations naming the source repository, commit, quantization scheme and modelgate
    version (read from the stored folder's own records). The registry records the
    ``oci://…@sha256:…`` URI as an artifact of the version (nothing without a registry).

    Args:
        model_uri: The stored model that passed the gate.
        repository: Registry repository to push to, ``registry[:port]/path``.
        record: Record JSON of the registered version (empty: nothing is recorded).
        registry_url: Registry URL (empty: ``$MODEL_REGISTRY_URL``, else the record's).
        tag: Tag to push (empty: from the stored folder's name).
        auth_dir: Folder of the mounted credentials Secret; its ``.dockerconfigjson`` is passed
            to skopeo when present (a public or in-cluster registry needs none).
        base_image: Base image with a shell (empty: the pinned busybox of
            ``modelgate.images.MODELCAR_BASE_IMAGE``; a mirror of it where that cannot be
            pulled).

    Returns:
        storage_uri: ``oci://<repository>@sha256:…``; modelcar: the modelcar's details JSON.

    Raises:
        ConfigError: A bad repository, tag or auth file.
        ModelcarError: skopeo is missing, or the base image, the build or the push failed.
        RegistryError: The modelcar could not be recorded on the version.
    """
    import json
    import os
    from collections import namedtuple

    from modelgate.logs import configure_logging
    from modelgate.modelcar import build_modelcar
    from modelgate.registry import RegistryRecord, record_modelcar

    configure_logging()
    authfile = os.path.join(auth_dir, ".dockerconfigjson") if auth_dir else ""
    car = build_modelcar(
        model_uri,
        repository=repository,
        tag=tag or None,
        base_image=base_image or None,
        authfile=authfile if authfile and os.path.isfile(authfile) else None,
    )
    if record:
        record_modelcar(
            record=RegistryRecord.from_dict(record), registry_url=registry_url or None, uri=car.uri
        )
    outputs = namedtuple("PackageOutputs", ["storage_uri", "modelcar"])
    return outputs(car.uri, json.dumps(car.to_dict()))


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def given_storage_uri(storage_uri: str = "") -> str:
    """The storageUri deploy uses when no modelcar is built: the ``storage_uri`` parameter as
    given (empty: the stored model's URI).

    Args:
        storage_uri: The run's ``storage_uri`` parameter.

    Returns:
        The same value.
    """
    return storage_uri
