"""The models' API keys: given by the operator (a string, e.g. from Ansible Vault) or generated.

``vllm_service_api_key: generate`` gives each model its own key, made once on the controller and
kept there in a 0600 file (``<key dir>/<model>.key``); the service role writes it into the host's
0600 EnvironmentFile and the probe reads the same file. A model served on several hosts has one
key on all of them, so a client or a load balancer in front of them needs one key per model.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat

from . import layout, systemd

GENERATE = layout.API_KEY_SETTING
KEY_BYTES = 32  # 256 bits, as secrets.token_urlsafe recommends for keys; 43 URL-safe characters


class ApiKeyError(ValueError):
    pass


def key_path(key_dir: str, model_name: str) -> str:
    return os.path.join(key_dir, f"{model_name}.key")


def _read(path: str) -> str:
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        # The ssh client's rule for private keys: a secret others can read is refused, not used.
        raise ApiKeyError(f"{path} is readable by others (mode {mode:04o}): chmod 600 {path}")
    with open(path, encoding="utf-8") as f:
        key = f.read().strip()
    if not key:
        raise ApiKeyError(f"{path} is empty: remove it to generate a new key, or write the key into it")
    return key


def _generate(path: str) -> str:
    """A new key in a new 0600 file; when another process (a fork serving another host) made the
    file first, its key. Written beside, then linked into place: no reader ever sees a part."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    key = secrets.token_urlsafe(KEY_BYTES)
    temp = f"{path}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)  # fails when the file exists: never replaces a key
        except FileExistsError:
            return _read(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return key


def resolve(setting: str | None, model_name: str, key_dir: str, create: bool = True) -> str:
    """The key a model's unit requires: ``setting`` itself, or for "generate" the model's key file
    (made when missing and ``create``; "" when missing and not ``create``, e.g. in --check)."""
    setting = "" if setting is None else str(setting)
    if setting != GENERATE:
        systemd.refuse_control_characters(setting, f"the API key of {model_name}")
        return setting
    if not key_dir:
        raise ApiKeyError("vllm_service_api_key is 'generate' but no directory for the keys was given")
    path = key_path(key_dir, model_name)
    if os.path.exists(path):
        return _read(path)
    return _generate(path) if create else ""
