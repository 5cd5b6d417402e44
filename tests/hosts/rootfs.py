"""The Debian 12 root filesystem that every test host boots from.

debootstrap costs about a minute and 315 MB, so the result is cached as a
zstd tarball keyed by everything that shapes it (suite, variant, package list,
preparation steps): only the first run on a machine pays for it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SUITE = "bookworm"

# What a bare Debian host of the fleet is assumed to have, plus what the roles
# would install with apt.  The test hosts cannot reach a Debian mirror (their
# only network is a veth to this machine), so the packages that the roles ask
# apt for are baked in here and the roles' apt tasks find them present.
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",  # Debian's python3 has no ensurepip without it
    "python3-apt",  # ansible.builtin.apt needs it on the host
    "sudo",
    "libnuma1",  # vllm._C of the CPU build links against it
    "ca-certificates",
    "iproute2",
    "procps",
    "curl",
    "git",
    "git-lfs",
)

# Bump when prepare_rootfs changes what it writes, so stale caches are not reused.
PREPARE_VERSION = 1

CACHE_DIR = Path(os.environ.get("VLLM_FLEET_CACHE", "/var/cache/vllm-fleet"))


def cache_key() -> str:
    text = f"{SUITE}|minbase|{','.join(PACKAGES)}|{PREPARE_VERSION}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def tarball_path() -> Path:
    return CACHE_DIR / f"rootfs-{SUITE}-{cache_key()}.tar.zst"


def debian_mirror() -> str:
    """The mirror apt on this machine already uses (no address is hard-coded)."""
    override = os.environ.get("VLLM_FLEET_DEBIAN_MIRROR")
    if override:
        return override
    candidates = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in candidates:
        if not path.is_file() or path.suffix not in ("", ".list", ".sources"):
            continue
        text = path.read_text(errors="replace")
        # deb822 format: "URIs: <url>" in a stanza whose Suites include the suite
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and SUITE in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        # one-line format: "deb <url> <suite> <components>"
        for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", text, re.M):
            if match.group(2) == SUITE:
                return match.group(1)
    raise RuntimeError(
        f"no apt source for Debian {SUITE} found in /etc/apt: set VLLM_FLEET_DEBIAN_MIRROR to a mirror URL"
    )


def prepare_rootfs(root: Path) -> None:
    """Make a debootstrapped tree bootable as many distinct hosts."""
    # Each host gets its name from nspawn's --machine and a fresh machine-id at boot.
    (root / "etc/hostname").unlink(missing_ok=True)
    (root / "etc/machine-id").write_text("")
    sshd_dropin = root / "etc/ssh/sshd_config.d/vllm-fleet-test.conf"
    sshd_dropin.parent.mkdir(parents=True, exist_ok=True)
    sshd_dropin.write_text(
        "# test host: root logs in with the generated key only\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "UseDNS no\n"
    )
    # Host keys are generated per host at first boot (ssh-keygen -A in a unit),
    # so two hosts never share one.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    unit = root / "etc/systemd/system/ssh-hostkeys.service"
    unit.write_text(
        "[Unit]\nDescription=Generate SSH host keys\nBefore=ssh.service\n\n"
        "[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\n\n"
        "[Install]\nWantedBy=multi-user.target\n"
    )
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "ssh-hostkeys.service"
    if not link.is_symlink():
        link.symlink_to("/etc/systemd/system/ssh-hostkeys.service")
    # Units that only fail or wait inside a container without hardware or a network.
    for unit_name in ("systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer"):
        (root / "etc/systemd/system" / unit_name).unlink(missing_ok=True)
        (root / "etc/systemd/system" / unit_name).symlink_to("/dev/null")
    # The apt lists debootstrap leaves are useless without a mirror and take space.
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)


def ensure_tarball(log=print) -> Path:
    """Return the cached rootfs tarball, building it first if it is missing."""
    target = tarball_path()
    if target.exists():
        log(f"rootfs: cached {target} ({target.stat().st_size / 2**20:.0f} MiB)")
        return target
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is not installed: apt-get install -y debootstrap")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="build-") as tmp:
        root = Path(tmp) / "root"
        mirror = debian_mirror()
        log(f"rootfs: debootstrap {SUITE} from the apt mirror (about a minute, once per machine)")
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(root),
                mirror,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        prepare_rootfs(root)
        partial = Path(tmp) / "rootfs.tar.zst"
        subprocess.run(
            ["tar", "--zstd", "-C", str(root), "--numeric-owner", "--xattrs", "-cf", str(partial), "."],
            check=True,
        )
        partial.rename(target)
    for stale in target.parent.glob(f"rootfs-{SUITE}-*.tar.zst"):
        if stale != target:  # an older package list or preparation: never used again
            stale.unlink()
    log(f"rootfs: built {target} ({target.stat().st_size / 2**20:.0f} MiB) in {time.monotonic() - started:.0f} s")
    return target


def lower_layers_in_use() -> set[Path]:
    """Every lower layer of a mounted overlay (a running test host): the base, and a seed above it
    (tests/hosts/seed.py), from the `lowerdir=a:b` option of each overlay in /proc/self/mounts."""
    layers = set()
    for line in Path("/proc/self/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[2] == "overlay":
            for option in fields[3].split(","):
                if option.startswith("lowerdir="):
                    layers.update(Path(p) for p in option.removeprefix("lowerdir=").split(":"))
    return layers


def _prune_stale_bases(state_dir: Path, keep: Path) -> None:
    """Remove base layers of older cache keys that no running host still mounts."""
    in_use = lower_layers_in_use()
    for stale in state_dir.glob("base-*"):
        if stale != keep and stale / "root" not in in_use:
            shutil.rmtree(stale, ignore_errors=True)


def ensure_base(state_dir: Path, log=print) -> Path:
    """Unpack the tarball once into a read-only lower layer shared by all hosts."""
    base = state_dir / f"base-{cache_key()}"
    _prune_stale_bases(state_dir, base)
    done = base / ".unpacked"
    if done.exists():
        return base / "root"
    tarball = ensure_tarball(log)
    shutil.rmtree(base, ignore_errors=True)
    (base / "root").mkdir(parents=True)
    started = time.monotonic()
    subprocess.run(
        ["tar", "--zstd", "-C", str(base / "root"), "--numeric-owner", "--xattrs", "-xf", str(tarball)],
        check=True,
    )
    done.write_text(str(tarball))
    log(f"rootfs: unpacked base in {time.monotonic() - started:.1f} s")
    return base / "root"
