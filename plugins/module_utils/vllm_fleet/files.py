"""Files the modules write on hosts."""

from __future__ import annotations

import json
import os
import tempfile


def write_json_atomically(path: str, data, mode: int, indent: int | None = None) -> None:
    """Write data as JSON to path with this mode: through a temporary file in the same directory,
    renamed into place, so a reader sees the old file or the whole new one, never half of it (and
    a private file is never readable by others, not even for a moment: the reason this is not
    AnsibleModule.atomic_move, which gives a new file the umask's default mode before a caller
    could tighten it)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=indent, sort_keys=True)
            handle.write("\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
