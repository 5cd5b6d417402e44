"""A real Prometheus (Debian's package, `make deps`) for the observability tests: started with the
scrape jobs and alert rules the vllm_monitoring role ships, its file_sd pointed at the targets
directory a test's playbook run wrote, and asked through its HTTP API."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from tests.integration.ansible_run import REPO_ROOT

FILES = REPO_ROOT / "roles/vllm_monitoring/files"
SCRAPE = FILES / "prometheus-scrape.yml"
ALERTS = FILES / "vllm-fleet-alerts.yml"


def binary() -> str | None:
    return shutil.which("prometheus")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Prometheus:
    def __init__(self, work: Path, targets_dir: Path, scrape_interval: str = "1s"):
        """The shipped scrape jobs, unchanged but for where the target files are and how often."""
        self.work = work
        self.port = _free_port()
        shipped = yaml.safe_load(SCRAPE.read_text())
        for job in shipped["scrape_configs"]:
            job["scrape_interval"] = scrape_interval
            for sd in job["file_sd_configs"]:
                sd["files"] = [str(targets_dir / Path(f).name) for f in sd["files"]]
                sd["refresh_interval"] = "1s"
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "rule_files": [str(ALERTS)],
            **shipped,
        }
        self.config = work / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        log = (self.work / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary() or "prometheus",
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.work / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prometheus not ready in 60 s:\n{self.log_tail()}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        path = self.work / "prometheus.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def api(self, path: str, **params: str) -> dict:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as resp:
            doc = json.loads(resp.read())
        assert doc["status"] == "success", doc
        return doc["data"]

    def query(self, expr: str) -> list[dict]:
        """Instant vector: [{metric: labels, value: float}]."""
        data = self.api("query", query=expr)
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in data["result"]]

    def wait_for(self, expr: str, check, timeout_s: float = 60) -> list[dict]:
        """Query until check(result) is true; the last result, or AssertionError with it."""
        deadline = time.monotonic() + timeout_s
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if check(result):
                return result
            time.sleep(1)
        raise AssertionError(f"{expr} never passed in {timeout_s} s: {result}\n{self.log_tail(10)}")

    def wait_for_rules(self, check, timeout_s: float = 60) -> list[dict]:
        """The rules of the group vllm-fleet once check(rules) is true (each has been evaluated)."""
        deadline = time.monotonic() + timeout_s
        rules: list[dict] = []
        while time.monotonic() < deadline:
            groups = self.api("rules")["groups"]
            rules = [rule for group in groups if group["name"] == "vllm-fleet" for rule in group["rules"]]
            if check(rules):
                return rules
            time.sleep(1)
        raise AssertionError(f"the rules never passed in {timeout_s} s: {rules}")
