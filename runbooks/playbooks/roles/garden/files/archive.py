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
NO_HARD_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}
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
    """Give the complete archive its name, the next free one if an archive has it already: an
    archive in the catalog is never overwritten. A hard link fails rather than replace; on a file
    system without hard links the name is first taken with an exclusive create, then renamed over."""
    for n in range(1000):
        final = dest / (f"{name}.tar.gz" if n == 0 else f"{name}-{n}.tar.gz")
        try:
            os.link(partial, final, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in NO_HARD_LINKS:
                raise
            try:
                os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            except FileExistsError:
                continue
            try:
                os.replace(partial, final)  # over the empty file this run just made
            except BaseException:
                final.unlink(missing_ok=True)
                raise
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
    # A part left by a run killed after its link is another name of a published archive: unlink it
    # (the archive keeps its bytes), never write through it; nor through a link planted in its place.
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = HashingWriter(raw)
            with tarfile.open(fileobj=writer, mode="w|gz") as tar:  # type: ignore[call-overload]
                for path in included:
                    tar.add(path, arcname=str(path.resolve()).lstrip("/"), filter=skip_excluded)
            raw.flush()
            os.fsync(raw.fileno())
        final = publish(partial, args.dest, args.name)
    except BaseException:
        partial.unlink(missing_ok=True)  # a failed run leaves no part behind
        raise
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
