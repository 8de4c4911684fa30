#!/usr/bin/env python3
"""Delete file archives past their retention, only ever archives this role wrote.

    python3 prune.py --dest /var/backups/garden-dx/files \
        /var/backups/garden-dx/files/garden-files-web1-20261101T030000Z.tar.gz

A path is deleted only when it is a regular file directly in --dest named garden-files-*.tar.gz
(what archive.py writes); anything else is refused, whatever the caller asked. A path already gone
counts as absent, not as a failure.
Prints one JSON document: removed, absent, refused.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ARCHIVE = re.compile(r"^garden-files-[A-Za-z0-9._-]{1,200}\.tar\.gz$")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("paths", nargs="*", type=Path)
    args = parser.parse_args()
    dest = args.dest.resolve()
    removed: list[str] = []
    absent: list[str] = []
    refused: list[str] = []
    for asked in args.paths:
        path = Path(asked)
        if path.parent.resolve() != dest or not ARCHIVE.match(path.name) or path.is_symlink():
            refused.append(str(asked))
        elif not path.exists():
            absent.append(str(asked))
        elif not path.is_file():
            refused.append(str(asked))
        else:
            path.unlink()
            removed.append(str(asked))
    print(json.dumps({"removed": removed, "absent": absent, "refused": refused}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
