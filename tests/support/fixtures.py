"""pytest fixtures for the tiny model and the stand-in ModelScope hub.

Register them once, in tests/conftest.py:

    pytest_plugins = ["tests.support.fixtures"]

Fixtures:
    tiny_model_dir        (session) the normal tiny model, generated once
    newline_model_dir     (session) the newline-only variant
    shared_vllm           (session) real `vllm serve` of the tiny models, one per variant, keyed
                          and started on first use, shared by every test that only asks them
                          (test_probe_real_vllm.py, test_vllm_tiny_model.py); tests/conftest.py
                          runs those tests together and stops the servers after the last of them
    hub_root              (function) an empty hub root, ROOT/<owner>/<name>/<revision>/...
    hub_server            (function) a StandInHub serving hub_root on 127.0.0.1, started and
                          stopped around the test; hub_server.url, .requests, fault injection
    loopback_only         (function) this process may resolve and connect to loopback only:
                          anything else raises OSError naming the address
    modelscope_env        (function) points the real SDK at hub_server (MODELSCOPE_ENDPOINT)
                          with MODELSCOPE_CACHE and MODELSCOPE_HOME in tmp dirs, so nothing
                          touches ~, under loopback_only; yields the hub
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket

import modelscope_hub.config
import pytest

from tests.support.hub import StandInHub
from tests.support.tiny_model import make_tiny_model
from tests.support.vllm_server import VllmServer, vllm_server, wait_healthy


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"), variant="normal")


@pytest.fixture(scope="session")
def newline_model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-model-newline"), variant="newline")


class SharedVllm:
    """One `vllm serve` per tiny-model variant for the whole session (each start is a minute or more
    of both cores here): tests that only send requests share it instead of starting their own."""

    def __init__(self, model_dirs: dict, work_root):
        self.model_dirs = model_dirs
        self.work_root = work_root
        self.servers: dict[str, VllmServer] = {}
        self._stack = contextlib.ExitStack()

    def server(self, variant: str, health_timeout_s: float | None = None) -> VllmServer:
        """The variant's server, started now if it is not running (not waited for, unless
        health_timeout_s is given: a test that measures the health wait must be the first user)."""
        if variant not in self.servers:
            work = self.work_root / f"shared-vllm-{variant}"
            work.mkdir(exist_ok=True)
            cm = vllm_server(self.model_dirs[variant], work, api_key=secrets.token_urlsafe(24))
            self.servers[variant] = self._stack.enter_context(cm)
        server = self.servers[variant]
        if health_timeout_s is not None:
            wait_healthy(server, health_timeout_s)
        return server

    def close(self) -> None:
        """Stop every server (idempotent)."""
        self._stack.close()
        self.servers.clear()


@pytest.fixture(scope="session")
def shared_vllm(request, tiny_model_dir, newline_model_dir, tmp_path_factory):
    shared = SharedVllm({"normal": tiny_model_dir, "newline": newline_model_dir}, tmp_path_factory.mktemp("vllm"))
    request.config._vllm_fleet_shared_vllm = shared  # tests/conftest.py stops it after its last user
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def hub_root(tmp_path):
    root = tmp_path / "hub-root"
    root.mkdir()
    return root


@pytest.fixture
def hub_server(hub_root):
    with StandInHub(hub_root, host="127.0.0.1", port=0) as hub:
        yield hub


LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def _is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return False
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail loudly, in this process, on any name lookup or connection beyond loopback: an SDK
    that quietly fell back to the public hub would otherwise pass where the network is open."""
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        if host is not None and not _is_loopback(host):
            raise OSError(f"test tried to resolve non-loopback host {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address[0]):
            raise OSError(f"test tried to connect to non-loopback address {address!r}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture
def modelscope_env(loopback_only, hub_server, tmp_path, monkeypatch):
    # The SDK reads MODELSCOPE_ENDPOINT once per process into a default HubConfig
    # (modelscope_hub/config.py, get_default_config): drop it so this test's hub is used,
    # and monkeypatch restores the previous one afterwards.
    monkeypatch.setattr(modelscope_hub.config, "_default_config", None)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub_server.url)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "modelscope-cache"))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "modelscope-home"))
    monkeypatch.delenv("MODELSCOPE_DOMAIN", raising=False)
    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    # No proxy may carry a loopback request elsewhere.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return hub_server
