"""Verified, resumable downloads against a real mirror (olah) behind a byte-counting proxy.

olah ignores ``Range`` (see :mod:`modelgate.testing.hub_mirror`), so the proxy answers range
requests and counts the body bytes it sends per file: what a resumed attempt transfers is
measured, not inferred.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub.constants import DOWNLOAD_CHUNK_SIZE

from modelgate.download import (
    DOWNLOADS_DIR,
    MANIFEST_NAME,
    download_model,
    download_to_store,
    sha256_file,
)
from modelgate.errors import DownloadError
from modelgate.storage import fetch
from modelgate.testing.hub_mirror import CountingProxy, LocalHubMirror, write_random_model

pytestmark = pytest.mark.e2e

WEIGHTS = "model.safetensors"
#: Big enough that the cut lands mid-file after some whole download chunks, small enough for a
#: quick test.
WEIGHT_BYTES = 32 * 1024 * 1024
#: Bytes of the weights sent before the mirror is killed (not a chunk boundary on purpose).
CUT_AFTER = 23 * 1024 * 1024 + 4321
REPO = "modelgate/big-random"


@pytest.fixture(autouse=True)
def _own_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private huggingface_hub cache: the config files resolve_snapshot reads go there."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture()
def big_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return write_random_model(
        tmp_path / "src", template_dir=tiny_model_dir, weight_bytes=WEIGHT_BYTES, seed=7
    )


def test_a_mirror_killed_mid_file_is_resumed_by_the_retry(big_model, tmp_path, monkeypatch):
    work = tmp_path / "work"
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(work))
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    size = (big_model / WEIGHTS).stat().st_size
    store = (tmp_path / "store").as_uri()
    with LocalHubMirror(tmp_path / "repos") as mirror:
        mirror.publish(big_model, repo_id=REPO)
        with CountingProxy(
            mirror.endpoint, cut_file=WEIGHTS, cut_after=CUT_AFTER, on_cut=mirror.stop
        ) as proxy:
            with pytest.raises(DownloadError) as failed:
                download_to_store(REPO, store=store, endpoint=proxy.endpoint)
            # one line naming the file and the endpoint
            message = str(failed.value)
            assert WEIGHTS in message and proxy.endpoint in message and "\n" not in message
            partials = list((work / DOWNLOADS_DIR).rglob(f"{WEIGHTS}.incomplete"))
            assert len(partials) == 1, partials
            kept = partials[0].stat().st_size
            assert proxy.sent[WEIGHTS] == CUT_AFTER
            # http_get writes what httpx yields in chunks of DOWNLOAD_CHUNK_SIZE (10 MiB): the
            # bytes of the chunk being filled at the cut are lost (huggingface_hub
            # file_download.http_get, response.iter_bytes(chunk_size=...))
            assert 0 < kept <= CUT_AFTER
            assert kept == CUT_AFTER // DOWNLOAD_CHUNK_SIZE * DOWNLOAD_CHUNK_SIZE
            assert not (tmp_path / "store").exists() or not any(
                (tmp_path / "store").rglob(MANIFEST_NAME)
            )

            mirror.start()  # same port: the proxy reaches it again
            proxy.cut_file = None
            before = proxy.sent[WEIGHTS]
            stored = download_to_store(REPO, store=store, endpoint=proxy.endpoint)
            fetched_again = proxy.sent[WEIGHTS] - before
    assert fetched_again == size - kept  # only the missing bytes were transferred
    assert not stored.reused
    folder = fetch(stored.uri)  # sizes and sha256 against the store's marker
    expected = sha256_file(big_model / WEIGHTS)
    assert sha256_file(folder / WEIGHTS) == expected
    assert {f.path: f.sha256 for f in stored.manifest.files}[WEIGHTS] == expected
    assert not list((work / DOWNLOADS_DIR).rglob(WEIGHTS))  # the download folder is gone


def test_a_mirror_that_alters_a_file_fails_the_download(big_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    with LocalHubMirror(tmp_path / "repos") as mirror:
        mirror.publish(big_model, repo_id=REPO)
        with CountingProxy(mirror.endpoint, flip_file=WEIGHTS) as proxy:
            with pytest.raises(DownloadError) as failed:
                download_model(REPO, target_dir=tmp_path / "m", endpoint=proxy.endpoint)
            with pytest.raises(DownloadError, match=WEIGHTS):
                download_to_store(
                    REPO, store=(tmp_path / "store").as_uri(), endpoint=proxy.endpoint
                )
    # olah serves plain git blobs: the check is the git blob id from paths-info
    assert failed.value.args[0].startswith(f"{WEIGHTS} from {proxy.endpoint} does not match")
    assert "git blob id expected" in str(failed.value)
    want, got = str(failed.value).split("expected ")[1].split(";")[0].split(", actual ")
    assert want != got and len(want) == len(got) == 40
    assert not (tmp_path / "m" / WEIGHTS).exists()  # deleted: a retry fetches it again
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob(WEIGHTS))
