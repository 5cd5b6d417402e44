"""One download into a revision directory at a time (weights.take_over_download)."""

from __future__ import annotations

import os
import time


def test_a_download_left_running_by_a_lost_run_is_stopped_and_no_other_process_is(tmp_path):
    import subprocess
    import sys

    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import weights

    pid_file = tmp_path / "downloads" / "x.pid"
    assert weights.take_over_download(pid_file) is None  # nothing there: this process's pid is written
    assert pid_file.read_text().split()[0] == str(os.getpid())
    # A module process whose run lost the host (its command line names the module), still running.
    sleeper = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    earlier = subprocess.Popen([sys.executable, "-c", sleeper, "AnsiballZ_modelscope_download.py"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, "something_else.py"])
    try:
        time.sleep(0.5)
        pid_file.write_text(f"{earlier.pid} {weights._process_start(earlier.pid)}\n")
        assert weights.take_over_download(pid_file, wait_s=1.0) == earlier.pid  # TERM ignored: killed
        assert earlier.wait(timeout=10) == -9
        # Not a downloader, or the pid's start time is not the one written (a pid given again): left alone.
        pid_file.write_text(f"{other.pid} {weights._process_start(other.pid)}\n")
        assert weights.take_over_download(pid_file) is None and other.poll() is None
        pid_file.write_text(f"{other.pid} 1\n")
        assert weights.take_over_download(pid_file) is None and other.poll() is None
    finally:
        for proc in (earlier, other):
            proc.kill()
            proc.wait()
