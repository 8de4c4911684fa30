#!/usr/bin/env python3
"""Archive Garden DX's files and configuration as one .tar.gz, streamed, with its SHA-256.

    python3 archive.py --dest /var/backups/garden-dx/files --name garden-files-web1 \
        /opt/garden-dx /etc/garden-dx
The archive is written once, hashed while it is written (never held in memory), and only a complete
file gets its final name, never another archive's: two runs in the same second give NAME.tar.gz and
NAME-1.tar.gz. Paths that do not exist are listed as missing, not fatal.
Prints one JSON document: path, size_bytes, sha256, included, missing.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import re
import sys
import tarfile
from pathlib import Path

EXCLUDED = {"node_modules", "__pycache__", ".venv", "venv"}
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class HashingWriter:
    """A write-only file object that hashes and counts what goes through it."""

    def __init__(self, raw: object) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)  # type: ignore[attr-defined, no-any-return]


def skip_excluded(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if EXCLUDED.intersection(Path(info.name).parts) else info


def publish(partial: Path, dest: Path, name: str) -> Path:
    """Give the complete archive its name, the next free one if an archive has it already (a hard
    link fails rather than replace: an archive in the catalog is never overwritten). On a file
    system without hard links, a rename to a name not taken (runs on a host never overlap: the
    bot's hosts lock)."""
    for n in range(1000):
        final = dest / (f"{name}.tar.gz" if n == 0 else f"{name}-{n}.tar.gz")
        try:
            os.link(partial, final)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            if final.exists() or final.is_symlink():
                continue
            os.replace(partial, final)
        else:
            partial.unlink()
        directory = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return final
    raise FileExistsError(f"{name}.tar.gz and 999 more names are taken")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args()
    if not NAME.match(args.name):
        print(json.dumps({"error": f"not an archive name: {args.name!r}"}))
        return 2
    args.dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = args.dest / f"{args.name}.tar.gz.part"
    included = [p for p in args.paths if p.exists()]
    missing = [str(p) for p in args.paths if not p.exists()]
    with partial.open("wb") as raw:
        writer = HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
            for path in included:
                tar.add(path, arcname=str(path.resolve()).lstrip("/"), filter=skip_excluded)
        raw.flush()
        os.fsync(raw.fileno())
    final = publish(partial, args.dest, args.name)
    print(
        json.dumps(
            {
                "path": str(final),
                "size_bytes": writer.size,
                "sha256": writer.digest.hexdigest(),
                "included": [str(p) for p in included],
                "missing": missing,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
