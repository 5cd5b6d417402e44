"""Hash-locked runtimes (issue 19): one lock file per (vLLM package and version, host Python, arch),
every package of the environment pinned with its SHA-256 (`uv pip compile --generate-hashes`, made by
`make locks`: scripts/lock_runtime.py). The runtime role installs exactly a lock, with hashes
required, and checks the wheelhouse against it on the host before anything is installed.

Pure functions over the lock's text and the wheelhouse's files: the wheelhouse check module, the
role's filters, the plan and the rollout summary share them.
"""

from __future__ import annotations

import hashlib
import os
import re

# Where the role ships its locks, relative to the collection (or checkout) root.
LOCKS_DIR = os.path.join("roles", "vllm_runtime", "files", "locks")
# The lock's first lines say what it was made from (scripts/lock_runtime.py writes them).
INPUT_MARK = "# vllm-fleet lock of:"
LEFT_OUT_MARK = "# vllm-fleet left out:"

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def canonical_name(name: str) -> str:
    """PEP 503's normalized name: what a wheel's file name and a requirement compare by."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_name(package: str, version: str, python_version: str, arch: str) -> str:
    return f"{package}-{version}-py{python_version}-{arch}.txt"


def shipped_lock(root: str | None, package: str, version: str, python_version: str, arch: str) -> str:
    """The path of the lock the collection ships for this runtime; '' when it ships none."""
    if not root:
        return ""
    path = os.path.join(root, LOCKS_DIR, lock_name(package, version, python_version, arch))
    return path if os.path.isfile(path) else ""


def parse(text: str) -> dict[str, dict]:
    """{canonical name: {"name", "version", "hashes"}} of a requirements file in uv's hashed form
    (a pin, then its `--hash=` continuation lines). A pin without a hash is refused: a lock that does
    not fix the bytes of every wheel is not one."""
    pins: dict[str, dict] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match:
            name, version = match.group(1), match.group(2).rstrip("\\").strip()
            current = {"name": name, "version": version, "hashes": []}
            pins[canonical_name(name)] = current
        elif current is None:
            raise ValueError(f"not a pinned requirement: {line!r}")
        current["hashes"] += _HASH.findall(line)
    missing = sorted(p["name"] for p in pins.values() if not p["hashes"])
    if missing:
        raise ValueError(f"pins without a --hash: {', '.join(missing)}")
    return pins


def inputs(text: str) -> dict[str, list[str]]:
    """What the lock was made from: the requirements asked for and the packages left out of it."""
    found = {"requirements": [], "left_out": []}
    for line in text.splitlines():
        if line.startswith(INPUT_MARK):
            found["requirements"] = line[len(INPUT_MARK) :].split()
        elif line.startswith(LEFT_OUT_MARK):
            found["left_out"] = line[len(LEFT_OUT_MARK) :].split()
    return found


def digest(text: str) -> str:
    """12 hex digits naming what the lock installs (names, versions, hashes), not its comments."""
    pins = parse(text)
    canonical = "\n".join(
        f"{key}=={pins[key]['version']} " + " ".join(sorted(pins[key]["hashes"])) for key in sorted(pins)
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def subset(text: str, names: list[str]) -> str:
    """The lock's pins of ``names`` only, as a requirements file (the installer's own one)."""
    pins = parse(text)
    lines = []
    for name in names:
        pin = pins.get(canonical_name(name))
        if pin is None:
            raise ValueError(f"{name} is not in the lock")
        lines.append(f"{pin['name']}=={pin['version']} " + " ".join(f"--hash=sha256:{h}" for h in pin["hashes"]))
    return "\n".join(lines) + "\n"


def wheel_name_version(filename: str) -> tuple[str, str] | None:
    """(canonical name, version) of a wheel file's name (PEP 427); None for anything else."""
    if not filename.endswith(".whl"):
        return None
    parts = filename[: -len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return None
    return canonical_name(parts[0]), parts[1]


def check_wheelhouse(pins: dict[str, dict], files: dict[str, str]) -> list[str]:
    """What keeps a wheelhouse from being exactly the lock: ``files`` maps each wheel's file name to
    its SHA-256. Every pin needs one wheel of its version whose hash the lock lists; any other file
    is refused by name."""
    problems, seen = [], set()
    for filename in sorted(files):
        parsed = wheel_name_version(filename)
        if parsed is None:
            problems.append(f"{filename}: not a wheel, and not in the lock")
            continue
        key, version = parsed
        seen.add(key)  # a wheel of this package is there (refused or not): it is not missing
        pin = pins.get(key)
        if pin is None:
            problems.append(f"{filename}: {key} is not in the lock")
        elif _normal_version(version) != _normal_version(pin["version"]):
            problems.append(f"{filename}: version {version}, the lock pins {pin['version']}")
        elif files[filename] not in pin["hashes"]:
            problems.append(
                f"{filename}: sha256 {files[filename]} is not one the lock lists for {pin['name']}=={pin['version']}"
            )
    for key in sorted(set(pins) - seen):
        problems.append(f"{pins[key]['name']}=={pins[key]['version']}: no wheel for it in the wheelhouse")
    return problems


def _normal_version(version: str) -> str:
    # A wheel's file name escapes a local version's "+" as "_" in some tools; compare both as one.
    return version.replace("_", "+").lower()


def versions(text: str) -> dict[str, str]:
    """{name as the lock writes it: version}: what a last good state keeps of its lock."""
    return {pin["name"]: pin["version"] for pin in parse(text).values()}


def version_changes(old: dict[str, str], new: dict[str, str], most: int = 6) -> list[str]:
    """What a lock change changes in versions (from two ``versions``): `torch 2.13.0 -> 2.13.1`,
    then `+ ray 2.58.0`, then `- ray 2.58.0`; beyond ``most``, one `and N more`."""
    old_by = {canonical_name(k): (k, v) for k, v in old.items()}
    new_by = {canonical_name(k): (k, v) for k, v in new.items()}
    # Moved versions first (what an operator looks for), then the packages added, then those removed.
    moved, added, removed = [], [], []
    for key in sorted(set(old_by) | set(new_by)):
        before, after = old_by.get(key), new_by.get(key)
        if before is None:
            added.append(f"+ {after[0]} {after[1]}")
        elif after is None:
            removed.append(f"- {before[0]} {before[1]}")
        elif before[1] != after[1]:
            moved.append(f"{after[0]} {before[1]} -> {after[1]}")
    said = moved + added + removed
    if len(said) > most:
        said = [*said[:most], f"and {len(said) - most} more"]
    return said
