"""Seeds: what a real role run left on one test host, as a read-only layer under other test hosts.

A full test run built the pinned vLLM environment nine times (wheelhouse copy, install, the proof's
import of vLLM: 60-80 s each on a loaded 2-core machine), though only test_deploy.py and the
vllm_runtime molecule scenario are about building one (issue 20). A seed is a directory a real run
of the vllm_runtime role made on a host (the environment and its record `.vllm-fleet-install.json`),
copied out of that host once per test session; `testhosts.create(..., seed=layer)` puts it between
the new host's own (upper) layer and the Debian base. The new host is then a host whose environment
an earlier run built and proved: the role reads the record, finds its own spec and builds nothing,
its path on every later run of a real fleet. Nothing is faked: the files are the role's own output.

A seed lives in STATE_DIR/seeds/<name>/root, on the same filesystem as the hosts' layers; it is
removed by its owner (the session fixture in tests/integration/conftest.py) and, failing that, by
`python -m tests.hosts destroy` once no host mounts it; `leftovers` reports it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from . import rootfs

SEEDS = "seeds"


def seeds_dir(state_dir: Path) -> Path:
    return state_dir / SEEDS


def harvest(host_root: Path, paths: list[str], dest: Path) -> Path:
    """Copy `paths` (absolute paths on the host) out of a host's root into dest/root, keeping owners,
    modes, links and the parents' modes; return the layer (dest/root). Atomic: a copy that fails
    leaves no layer behind."""
    if dest.exists():
        raise FileExistsError(f"seed {dest} exists already")
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "root").mkdir(parents=True)
    try:
        for path in paths:
            relative = path.lstrip("/")
            if not (host_root / relative).exists():
                raise FileNotFoundError(f"{path} is not on the host ({host_root})")
            # --parents recreates the leading directories, and with -a their owners and modes too.
            subprocess.run(
                ["cp", "-a", "--parents", relative, str(partial / "root")],
                cwd=host_root,
                check=True,
                capture_output=True,
                text=True,
            )
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest / "root"


def in_use(layer: Path) -> bool:
    """Whether a mounted overlay (a running host) has this layer among its lower layers."""
    return layer in rootfs.lower_layers_in_use()


def remove(dest: Path) -> bool:
    """Remove a seed unless a host still mounts it; True when it is gone."""
    if in_use(dest / "root"):
        return False
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(dest.with_name(dest.name + ".partial"), ignore_errors=True)
    return not dest.exists()


def existing(state_dir: Path) -> list[Path]:
    root = seeds_dir(state_dir)
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
