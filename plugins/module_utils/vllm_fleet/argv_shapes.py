"""The `vllm serve` command line shapes an environment's parser accepted, kept in the environment.

A shape is a unit's argv less its model directory (the positional after `serve`): argparse takes
that positional as a string and neither vLLM's parser nor validate() opens it
(vllm/entrypoints/cli/serve.py, vllm/entrypoints/launchers/cli_args.py validate_parsed_serve_args),
so two lines of one shape get one verdict. A new revision of a model changes only its directory,
and parsing its line again costs an import of vLLM (35-45 s per host of a rolling update on a
loaded 2-core test machine, 10-15 s on a small host). Whoever runs the parser (the environment's
proof, roles/vllm_runtime, and roles/vllm_service's check, both through vllm_serve_check) keeps the
shapes it accepted in the environment itself: a new environment starts with none.
"""

from __future__ import annotations

import hashlib
import json
import os

from .files import write_json_atomically

FILE_NAME = ".vllm-fleet-accepted-argv-shapes.json"


class ArgvShapeError(ValueError):
    pass


def shapes_file(env_dir: str) -> str:
    """Where an environment keeps the shapes its parser accepted."""
    return os.path.join(str(env_dir), FILE_NAME)


def shape_id(argv) -> str:
    """A sha256 of the argv with its model directory left out."""
    argv = [str(a) for a in argv]
    if len(argv) < 3 or argv[1] != "serve":
        raise ArgvShapeError(f"a shape needs [<bin>/vllm, serve, MODEL_DIR, ...], got {argv[:3]}")
    shape = [argv[0], "serve", *argv[3:]]
    return hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).hexdigest()


def not_accepted(argvs, accepted_ids) -> list:
    """The argvs whose shape is not among the ids a parser accepted before."""
    accepted = set(accepted_ids or [])
    return [argv for argv in argvs if shape_id(argv) not in accepted]


def read_ids(path: str) -> list[str]:
    """The ids kept at path; none when the file is missing or not a list of ids (it is only a
    memory of verdicts: losing it costs one parse, never a wrong verdict)."""
    try:
        with open(path) as handle:
            ids = json.load(handle)
    except (OSError, ValueError):
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []


def keep(path: str, argvs) -> int:
    """Add the shapes of these accepted argvs to the file at path (0644, written whole and renamed
    into place); returns how many were new."""
    kept = read_ids(path)
    new = sorted({shape_id(argv) for argv in argvs} - set(kept))
    if not new:
        return 0
    write_json_atomically(path, sorted(set(kept) | set(new)), 0o644)
    return len(new)
