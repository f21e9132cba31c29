"""The work folder is checked for writing: an unwritable work volume (root:root 0755 on block
storage, images running as uid 1001, no fsGroup from KFP) falls back to the pod's temp folder
with a warning, or fails in one line when nothing writable has room.

The tests run as root, for whom ``chmod 0555`` changes nothing, so each unwritable folder is
made so in a way root cannot get past: a path below a file (it cannot be created), or
``os.access`` answering as it does for uid 1001 on a root-owned 0755 folder.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import namedtuple
from pathlib import Path

import pytest

from modelgate import storage
from modelgate.errors import StorageError

pytestmark = pytest.mark.unit


@pytest.fixture
def pod_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pod's temp folder (``tempfile.gettempdir()``), empty."""
    folder = tmp_path / "pod-tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    monkeypatch.delenv("HF_HOME", raising=False)
    storage._warned.clear()
    return folder


def _deny_writes_to(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """``os.access`` as uid 1001 sees a root:root 0755 ``folder``."""
    real = os.access

    def access(path: os.PathLike[str] | str, mode: int, **kw: object) -> bool:
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, **kw)

    monkeypatch.setattr(os, "access", access)


def test_a_writable_work_folder_is_used(
    tmp_path: Path, pod_tmp: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "work"))
    with caplog.at_level(logging.WARNING, logger="modelgate.storage"):
        assert storage.work_dir() == tmp_path / "work"
    assert not caplog.records
    assert not list((tmp_path / "work").iterdir())  # the write check leaves nothing behind


def test_an_unwritable_work_volume_falls_back_to_the_pod_temp_folder(
    tmp_path: Path, pod_tmp: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    volume = tmp_path / "mnt-work"
    volume.mkdir(mode=0o755)
    volume.chmod(0o555)  # what uid 1001 meets; root still could write, hence the os.access view
    monkeypatch.delenv("MODELGATE_WORK_DIR", raising=False)
    monkeypatch.setattr(storage, "WORK_DIR", str(volume))  # the work volume is mounted
    _deny_writes_to(monkeypatch, volume)

    with caplog.at_level(logging.WARNING, logger="modelgate.storage"):
        found = storage.work_dir()
        storage.work_dir()  # warned once per process

    assert found == pod_tmp / "modelgate-work" and found.is_dir()
    assert os.environ["HF_HOME"] == str(found / "hf")  # the Hub caches follow
    (record,) = caplog.records
    message = record.getMessage()
    assert f"work folder {volume} is not writable" in message
    assert "mode 0555" in message and "uid" in message  # the cause
    assert "fsGroup" in message and "MODELGATE_WORK_DIR" in message  # the fix
    assert str(found) in message


def test_a_work_folder_that_cannot_be_created_falls_back(
    tmp_path: Path, pod_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No patching: below a file nothing can be created, not even by root."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "a-file" / "work"))

    assert storage.work_dir() == pod_tmp / "modelgate-work"


def test_nothing_writable_with_room_fails_in_one_line(
    tmp_path: Path, pod_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MODELGATE_WORK_DIR", str(tmp_path / "a-file" / "work"))
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(storage.shutil, "disk_usage", lambda _: usage(10, 9, 512 * 1024**2))

    with pytest.raises(StorageError) as info:
        storage.work_dir()

    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"work folder {tmp_path / 'a-file' / 'work'} is not writable")
    assert "only 0.5 GiB free" in message and "MODELGATE_WORK_DIR" in message

    _deny_writes_to(monkeypatch, pod_tmp / "modelgate-work")  # and the fallback is unwritable
    with pytest.raises(StorageError, match="fallback .* is no better"):
        storage.work_dir()
