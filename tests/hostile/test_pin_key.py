"""The controller's pin key file is read bounded: a huge, a binary or a wrong file is a clear
error naming it, never read whole and never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.errors import BadInput
from controller.rollout.hooks import MAX_PIN_KEY_BYTES, PIN_KEY_ENV, load_pin_signer


def test_a_huge_key_file_is_refused_after_a_bounded_read(tmp_path: Path) -> None:
    key = tmp_path / "pin-key"
    with key.open("wb") as f:  # 64 MiB, sparse: reading it whole would show in memory
        f.seek(64 * 1024 * 1024)
        f.write(b"x")
    with pytest.raises(BadInput, match=f"{key}: longer than {MAX_PIN_KEY_BYTES} bytes"):
        load_pin_signer(key)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary", b"not-a-key", b""])
def test_a_file_that_is_not_a_key_names_the_file(tmp_path: Path, content: bytes) -> None:
    key = tmp_path / "pin-key"
    key.write_bytes(content)
    with pytest.raises(BadInput, match=f"{key}: not a serveops pin key"):
        load_pin_signer(key)


def test_an_oversized_key_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PIN_KEY_ENV, "A" * 100_000)
    with pytest.raises(BadInput, match=rf"\${PIN_KEY_ENV}: longer than"):
        load_pin_signer(tmp_path / "pin-key")


def test_a_key_made_once_is_read_back(tmp_path: Path) -> None:
    key = tmp_path / "pin-key"
    first = load_pin_signer(key)
    assert load_pin_signer(key).public_key == first.public_key
    assert key.stat().st_mode & 0o777 == 0o600
