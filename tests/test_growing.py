"""growing.py: a file read by one thread while another still writes it."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from commuter.errors import BundleError
from commuter.growing import Growing, open_read


def _reader(path: Path, got: list[bytes], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            with open_read(path) as fh:
                while chunk := fh.read(7):
                    got.append(chunk)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reader_follows_the_writer_and_ends_only_when_it_finishes(tmp_path: Path) -> None:
    path = tmp_path / "f"
    got: list[bytes] = []
    errors: list[BaseException] = []
    with Growing(path) as g:
        reader = _reader(path, got, errors)
        for part in (b"first ", b"second ", b"third"):
            g.write(part)
        reader.join(0.3)
        assert reader.is_alive()  # all of it read, yet no end: the writer has not finished
        assert b"".join(got) == b"first second third"
        g.finish()
    reader.join(10)
    assert not reader.is_alive() and errors == []
    assert b"".join(got) == b"first second third"


def test_a_failed_writer_makes_the_reader_raise_after_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "f"
    got: list[bytes] = []
    errors: list[BaseException] = []
    g = Growing(path)
    reader = _reader(path, got, errors)
    g.write(b"half of it")
    g.fail(ConnectionError("the sender went away"))
    reader.join(10)
    assert b"".join(got) == b"half of it"
    [exc] = errors
    assert isinstance(exc, BundleError) and "the sender went away" in str(exc)


def test_leaving_the_block_without_finishing_fails_the_readers(tmp_path: Path) -> None:
    path = tmp_path / "f"
    got: list[bytes] = []
    errors: list[BaseException] = []
    with Growing(path) as g:
        g.write(b"abc")
        reader = _reader(path, got, errors)
    reader.join(10)
    assert b"".join(got) == b"abc"
    assert len(errors) == 1 and isinstance(errors[0], BundleError)


def test_readline_and_read_all_wait_too(tmp_path: Path) -> None:
    path = tmp_path / "f"
    out: dict[str, bytes] = {}

    def run() -> None:
        with open_read(path) as fh:
            out["line"] = fh.readline(64)
            out["rest"] = fh.read()

    with Growing(path) as g:
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        g.write(b"MAGIC ")
        g.write(b"1\nthe rest")
        g.write(b" and more")
        g.finish()
    thread.join(10)
    assert out == {"line": b"MAGIC 1\n", "rest": b"the rest and more"}


def test_a_finished_or_unknown_file_opens_as_any_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    with Growing(path) as g:
        g.write(b"done")
        g.finish()
    with open_read(path) as fh:
        assert fh.seekable() and fh.read() == b"done"
    other = tmp_path / "other"
    other.write_bytes(b"x")
    with open_read(other) as fh:
        assert fh.read() == b"x"


def test_a_growing_file_is_never_made_over_an_existing_one(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        Growing(path)
    assert path.read_bytes() == b"someone else's"
