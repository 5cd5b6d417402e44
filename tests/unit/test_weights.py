"""One download into a revision directory at a time (weights.take_over_download)."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def test_a_download_left_running_by_a_lost_run_is_stopped_and_no_other_process_is(tmp_path):
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import weights

    pid_file = tmp_path / "downloads" / "x.pid"
    stopped, fd = weights.take_over_download(pid_file)  # nothing there: this process takes it
    assert stopped is None and pid_file.read_text() == f"{os.getpid()}\n"
    os.close(fd)  # as this process's end would
    # Only the pid of a process that still holds the lock counts: a live process named in a file no
    # one holds (a download that ended, its pid given again) is left alone.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    # A download whose run lost the host, still running and deaf to TERM (stuck), holding the lock.
    # Its command line is the interpreter's alone, as a pipelined module's is.
    holder = (
        "import os, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import weights; "
        f"weights.take_over_download(weights.Path({str(pid_file)!r})); print('held', flush=True); time.sleep(60)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}  # this process's way to the collection
    earlier = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True, env=env)
    try:
        pid_file.write_text(f"{bystander.pid}\n")
        stopped, fd = weights.take_over_download(pid_file)
        os.close(fd)
        assert stopped is None and bystander.poll() is None
        assert earlier.stdout.readline() == "held\n"
        started = time.monotonic()
        stopped, fd = weights.take_over_download(pid_file, wait_s=1.0)
        assert stopped == earlier.pid and earlier.wait(timeout=10) == -9  # TERM ignored: killed
        assert time.monotonic() - started < 10
        assert pid_file.read_text() == f"{os.getpid()}\n"
        os.close(fd)
    finally:
        for proc in (earlier, bystander):
            proc.kill()
            proc.wait()
