"""The argv shape (module_utils/vllm_fleet/argv_shapes.py and its filters): what vLLM's parser
judges in a unit's command line, so a new revision of a model is not parsed again
(roles/vllm_service/tasks/present.yml)."""

from __future__ import annotations

import importlib.util
import json
import stat
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_fleet import argv_shapes

_PATH = Path(__file__).resolve().parents[2] / "plugins/filter/vllm_flags.py"
_SPEC = importlib.util.spec_from_file_location("vllm_fleet_filter_vllm_flags", _PATH)
vllm_flags = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(vllm_flags)

BIN = "/opt/vllm-fleet/envs/vllm-0.32.0-cpu/bin"
ROOT = "/var/lib/vllm-fleet/models"


def argv(revision="v1", port=8000, bin_dir=BIN, **flags):
    model = {"model": "o/tiny", "revision": revision, "port": port, "flags": {"dtype": "bfloat16", **flags}}
    return vllm_flags.vllm_serve_argv(model, bin_dir, ROOT, "0.0.0.0")


def test_a_new_revision_has_the_shape_of_the_old_line():
    assert argv("v1")[2] != argv("v2")[2]
    assert argv_shapes.shape_id(argv("v1")) == argv_shapes.shape_id(argv("v2"))


@pytest.mark.parametrize(
    ("where", "flags"),
    [
        ({"port": 8001}, {}),
        ({"bin_dir": "/opt/vllm-fleet/envs/vllm-0.33.0-cpu/bin"}, {}),
        ({}, {"max-model-len": 512}),
    ],
    ids=["port", "environment", "flag"],
)
def test_anything_but_the_model_directory_is_another_shape(where, flags):
    changed = argv("v1", **where, **flags)
    assert argv_shapes.shape_id(changed) != argv_shapes.shape_id(argv("v1"))


def test_only_lines_of_an_unaccepted_shape_are_left_to_check():
    accepted = [argv_shapes.shape_id(argv("v1"))]
    typo = argv("v2", **{"max-num-seqs-typo": 4})
    assert vllm_flags.vllm_argvs_not_accepted([argv("v2"), typo], accepted) == [typo]
    assert vllm_flags.vllm_argvs_not_accepted([argv("v2")], []) == [argv("v2")]
    assert vllm_flags.vllm_argvs_not_accepted([argv("v2")], None) == [argv("v2")]


def test_a_line_that_is_not_vllm_serve_is_refused():
    with pytest.raises(argv_shapes.ArgvShapeError, match="a shape needs"):
        argv_shapes.shape_id(["/bin/vllm", "bench", "x"])
    with pytest.raises(AnsibleFilterError, match="vllm_argvs_not_accepted: a shape needs"):
        vllm_flags.vllm_argvs_not_accepted([["/bin/vllm", "bench", "x"]], [])


def test_the_shapes_file_is_in_the_environment():
    env = "/opt/vllm-fleet/envs/vllm-0.32.0-cpu"
    assert vllm_flags.vllm_accepted_shapes_file(env) == f"{env}/.vllm-fleet-accepted-argv-shapes.json"


def test_kept_shapes_are_added_to_those_kept_before_world_readable(tmp_path):
    path = str(tmp_path / argv_shapes.FILE_NAME)
    assert argv_shapes.keep(path, [argv("v1")]) == 1
    # Another revision is the same shape: nothing new. Another port is.
    assert argv_shapes.keep(path, [argv("v2")]) == 0
    assert argv_shapes.keep(path, [argv("v2"), argv("v1", port=8001)]) == 1
    ids = json.loads(Path(path).read_text())
    assert ids == sorted(argv_shapes.shape_id(a) for a in (argv("v1"), argv("v1", port=8001)))
    assert stat.S_IMODE(Path(path).stat().st_mode) == 0o644
    assert argv_shapes.read_ids(path) == ids
    assert vllm_flags.vllm_argvs_not_accepted([argv("v3"), argv("v3", port=8002)], ids) == [argv("v3", port=8002)]
    assert [p.name for p in tmp_path.iterdir()] == [argv_shapes.FILE_NAME], "no temporary file left"


@pytest.mark.parametrize("content", [None, "", "not json", '{"a": 1}', "[1, 2]"])
def test_a_missing_or_unreadable_shapes_file_accepts_nothing(tmp_path, content):
    # Losing the memory costs one parse, never a wrong verdict.
    path = tmp_path / argv_shapes.FILE_NAME
    if content is not None:
        path.write_text(content)
    assert argv_shapes.read_ids(str(path)) == []
    assert argv_shapes.keep(str(path), [argv("v1")]) == 1
    assert argv_shapes.read_ids(str(path)) == [argv_shapes.shape_id(argv("v1"))]
