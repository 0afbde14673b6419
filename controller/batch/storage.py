"""Where a batch run's files are: the input's files and fingerprint, a run's staging folder and
committed output with its manifest. Local paths, `file://`, or any filesystem pyarrow has."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

MANIFEST = "_manifest.json"
STAGING = "_staging"
MAX_LISTED_FILES = 100_000


def filesystem(uri: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), uri
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def join_uri(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *parts])


def fingerprint(uri: str) -> tuple[str, list[str]]:
    """A digest of the input's files (path, size, modification time) and their paths."""
    import pyarrow.fs as pafs

    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {uri} does not exist")
    if info.type == pafs.FileType.File:
        files = [info]
    else:
        files = [
            f
            for f in fs.get_file_info(pafs.FileSelector(path, recursive=True))
            if f.type == pafs.FileType.File and not os.path.basename(f.path).startswith(("_", "."))
        ]
    if len(files) > MAX_LISTED_FILES:
        raise ValueError(f"input {uri} holds more than {MAX_LISTED_FILES} files")
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        digest.update(f"{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
    return digest.hexdigest()[:32], sorted(f.path for f in files)


def _dataset(uri: str, fmt: str) -> Any:
    """The files Ray Data reads too (names starting with `_` or `.` left out), as pyarrow's."""
    import pyarrow.dataset as pads

    fs, path = filesystem(uri)
    return pads.dataset(
        path,
        filesystem=fs,
        format="json" if fmt == "jsonl" else fmt,
        exclude_invalid_files=False,
        ignore_prefixes=["_", "."],
    )


def count_rows(uri: str, fmt: str) -> int:
    return int(_dataset(uri, fmt).count_rows())


def head(uri: str, fmt: str, rows: int) -> Any:
    """The first `rows` rows as pandas, read in this process: the promotion check's sample
    without starting a Ray Data pipeline for it (seconds of fixed cost on a small cluster)."""
    return _dataset(uri, fmt).head(rows).to_pandas()


def committed(final: str) -> dict[str, Any] | None:
    fs, path = filesystem(join_uri(final, MANIFEST))
    try:
        with fs.open_input_stream(path) as f:
            data = f.read(1024 * 1024)
    except (FileNotFoundError, OSError):
        return None
    manifest = json.loads(data)
    return manifest if isinstance(manifest, dict) else None
