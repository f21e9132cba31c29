"""modelgate.processes: stopping whole process groups, signals that unwind, the server record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelgate import processes
from modelgate.processes import (
    SERVERS_FILE_ENV,
    group_members,
    marked_processes,
    pid_alive,
    proc_stat,
    record_server,
    record_stopped,
    recorded_servers,
    same_process,
    servers_file,
    signals_raise,
    start_time,
    stop_process_group,
    stop_processes,
)

pytestmark = pytest.mark.unit

needs_proc = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="needs Linux /proc to list a process group"
)

# A process that starts ``workers`` children (each ignoring SIGTERM when asked), prints their
# pids on one line, then sleeps. With ``--leader-ignores`` it ignores SIGTERM itself too.
_TREE = r"""
import signal, subprocess, sys, time
workers, stubborn, leader_ignores = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3] == "1"
worker = (
    "import signal, sys, time\n"
    "if sys.argv[1] == '1': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('up', flush=True)\n"
    "time.sleep(300)\n"
)
if leader_ignores:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
children = [
    subprocess.Popen([sys.executable, "-c", worker, "1" if stubborn else "0"],
                     stdout=subprocess.PIPE, text=True)
    for _ in range(workers)
]
for c in children:
    c.stdout.readline()  # its handler is installed
print(" ".join(str(c.pid) for c in children), flush=True)
time.sleep(300)
"""


def _group(
    *, workers: int = 2, stubborn: bool = False, leader_ignores: bool = False
) -> tuple[subprocess.Popen[str], list[int]]:
    """A process group like vLLM's: a leader in its own session and its worker processes."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _TREE, str(workers), str(int(stubborn)), str(int(leader_ignores))],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    return proc, [proc.pid, *map(int, line.split())]


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie nobody reaped (PID 1 here may not reap orphans)."""
    stat = proc_stat(pid)
    return not pid_alive(pid) and (stat is None or stat.gone)


@pytest.fixture()
def groups():
    """Groups a test started; SIGKILLed afterwards whatever the test did."""
    started: list[int] = []
    yield started
    for pgid in started:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@needs_proc
def test_a_worker_that_ignores_sigterm_is_killed_too(groups):
    proc, pids = _group(workers=2, stubborn=True)
    groups.append(proc.pid)
    assert sorted(group_members(proc.pid)) == sorted(pids)

    started = time.monotonic()
    stop_process_group(proc.pid, timeout=1.0)
    took = time.monotonic() - started

    assert [pid for pid in pids if not _gone(pid)] == []
    assert group_members(proc.pid) == []
    assert 1.0 <= took < 10, took  # waited the grace period, then SIGKILL


@needs_proc
def test_a_leader_that_ignores_sigterm_is_killed_after_the_grace_period(groups):
    proc, pids = _group(workers=1, leader_ignores=True)
    groups.append(proc.pid)
    stop_process_group(proc.pid, timeout=0.5)
    assert all(_gone(pid) for pid in pids)


@needs_proc
def test_a_group_that_obeys_sigterm_is_not_waited_for_longer(groups):
    proc, pids = _group(workers=2)
    groups.append(proc.pid)
    started = time.monotonic()
    stop_process_group(proc.pid, timeout=30.0)
    assert time.monotonic() - started < 10
    assert all(_gone(pid) for pid in pids)


def test_stopping_a_gone_group_is_a_no_op(groups):
    proc, _ = _group(workers=0)
    groups.append(proc.pid)
    stop_process_group(proc.pid, timeout=5)
    stop_process_group(proc.pid, timeout=5)  # idempotent
    assert group_members(proc.pid) == []


def test_pid_alive_of_a_zombie_is_false():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    while pid_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(proc.pid)


# ------------------------------------------------------------------------------------------------
# signals_raise
# ------------------------------------------------------------------------------------------------


@pytest.fixture()
def sigterm_noted():
    """A SIGTERM handler that only notes the signal, so no SIGTERM kills pytest."""
    received: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_raises_keyboard_interrupt_once_then_cleanup_is_not_cut_short(sigterm_noted):
    cleaned = []
    with signals_raise() as caught:
        with pytest.raises(KeyboardInterrupt, match="received SIGTERM") as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs before this ends
        assert type(info.value) is KeyboardInterrupt  # what subprocess.Popen treats as Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)  # a second one during the clean-up: ignored
        os.kill(os.getpid(), signal.SIGINT)
        cleaned.append(True)
    assert caught.signum == signal.SIGTERM and caught.name == "SIGTERM"
    assert cleaned == [True]
    assert not sigterm_noted
    os.kill(os.getpid(), signal.SIGTERM)  # outside the block: the previous handler again
    assert sigterm_noted == [signal.SIGTERM]


def test_nested_blocks_share_the_outer_handler(sigterm_noted):
    with signals_raise() as outer:
        with pytest.raises(KeyboardInterrupt):
            with signals_raise() as inner:
                assert inner is outer
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        os.kill(os.getpid(), signal.SIGTERM)  # the outer block's clean-up is not cut short
    assert outer.signum == signal.SIGTERM and not sigterm_noted


def test_signals_raise_outside_the_main_thread_does_nothing():
    import threading

    seen = []

    def worker() -> None:
        with signals_raise() as caught:
            seen.append(caught.signum)

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [None] and signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------------------------------
# The record of started servers
# ------------------------------------------------------------------------------------------------


def test_record_is_a_no_op_without_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv(SERVERS_FILE_ENV, raising=False)
    record_server(os.getpid(), model_dir=str(tmp_path))
    record_stopped(os.getpid())
    assert list(tmp_path.iterdir()) == []


def test_recorded_servers_are_those_started_and_not_stopped(tmp_path, groups):
    path = tmp_path / "servers.jsonl"
    first, _ = _group(workers=0)
    second, _ = _group(workers=0)
    groups.extend([first.pid, second.pid])
    with servers_file(path):
        assert os.environ[SERVERS_FILE_ENV] == str(path)
        record_server(first.pid, endpoint="http://a", model_dir="/tmp/a")
        record_server(second.pid, pgid=second.pid, name="tiny", run_id="run-2", endpoint="http://b")
        record_stopped(first.pid)
    assert SERVERS_FILE_ENV not in os.environ or os.environ[SERVERS_FILE_ENV] != str(path)

    (entry,) = recorded_servers(path)
    assert entry["pid"] == entry["pgid"] == second.pid
    assert entry["endpoint"] == "http://b"
    # what a run's rollback step looks for: the servers that run started under that name
    assert (entry["name"], entry["run_id"]) == ("tiny", "run-2")
    assert entry["start_time"] == proc_stat(second.pid).start_time
    path.write_text(path.read_text() + '{"event": "sta')  # a line a crash cut short
    assert [e["pid"] for e in recorded_servers(path)] == [second.pid]
    assert recorded_servers(tmp_path / "none.jsonl") == []


@needs_proc
def test_same_process_tells_a_reused_pid_by_its_start_time(groups):
    proc, _ = _group(workers=0)
    groups.append(proc.pid)
    started = start_time(proc.pid)
    assert started is not None
    assert same_process(proc.pid, started)
    assert not same_process(proc.pid, started - 1)  # a process of that pid that started earlier
    assert same_process(proc.pid, None)  # nothing recorded: cannot tell
    assert same_process(2**22 + 1, 123)  # no such process now: nothing to tell it from


@needs_proc
def test_a_recorded_pid_now_used_by_another_process_is_left_out(tmp_path, groups):
    proc, _ = _group(workers=0)
    groups.append(proc.pid)
    path = tmp_path / "servers.jsonl"
    entry = {"event": "started", "pid": proc.pid, "pgid": proc.pid, "start_time": 1}
    path.write_text(json.dumps(entry) + "\n")  # started at boot: not this process
    assert recorded_servers(path) == []


@needs_proc
def test_marked_processes_finds_an_orphan_of_the_run(tmp_path, monkeypatch):
    # a step's child outlives the step (its parent): the run still finds it by its environment
    marker = str(tmp_path / "servers.jsonl")
    monkeypatch.setenv(SERVERS_FILE_ENV, marker)
    script = (
        "import subprocess, sys\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(c.pid, flush=True)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    orphan = int(out.stdout)
    try:
        found = marked_processes(SERVERS_FILE_ENV, marker)
        assert [p.pid for p in found] == [orphan]
        assert found[0].ppid != os.getpid()  # not a child of ours any more
        assert marked_processes(SERVERS_FILE_ENV, marker + "-other-run") == []
        stop_processes([orphan], timeout=5)
        assert _gone(orphan)
    finally:
        if not _gone(orphan):
            os.kill(orphan, signal.SIGKILL)


@needs_proc
def test_stop_processes_gives_python_a_keyboard_interrupt_first(tmp_path):
    done = tmp_path / "finally-ran"
    script = (
        "import signal, sys, time\n"
        # a shell's background job starts with SIGINT ignored (CI may run us so): restore
        # Python's own handler, which is what an interactive user's process has
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "print('up', flush=True)\n"
        "try:\n"
        "    time.sleep(300)\n"
        "finally:\n"
        f"    open({str(done)!r}, 'w').close()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout and proc.stdout.readline().strip() == "up"
    stop_processes([proc.pid], grace=0.2, timeout=10)
    assert done.is_file()
    assert _gone(proc.pid)


def test_module_reads_no_proc_where_there_is_none(monkeypatch, tmp_path, groups):
    monkeypatch.setattr(processes, "_PROC", tmp_path / "no-proc")
    proc, _ = _group(workers=0)
    groups.append(proc.pid)
    assert group_members(proc.pid) == [proc.pid]  # exists, per kill(2)
    assert marked_processes(SERVERS_FILE_ENV, "x") == []
    stop_process_group(proc.pid, timeout=5)
    assert group_members(proc.pid) == []
