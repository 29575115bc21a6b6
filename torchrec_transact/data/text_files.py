#!/usr/bin/env python3
"""Text files before parsing: a check that a file is UTF-8 text (naming the line where it
is not), its first lines, and a stream that rewrites a multi-character delimiter (``::``)
into one character for the CSV reader."""

import codecs
import io
from typing import List

SEPARATOR = "\x1f"  # stands in for a multi-character delimiter


class Transcoded(io.RawIOBase):
    """A binary file with a multi-character delimiter replaced by one character, streamed."""

    def __init__(self, path: str, delimiter: str) -> None:
        self._file = open(path, "rb")
        self._old, self._new = delimiter.encode(), SEPARATOR.encode()
        self._out, self._carry, self._eof = b"", b"", False

    chunk_size = 1 << 20

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        chunk = self._file.read(self.chunk_size)
        if not chunk:
            self._out += self._carry.replace(self._old, self._new)
            self._carry, self._eof = b"", True
            return
        # Replace first, then hold back an end that may be the start of a delimiter cut by
        # the chunk (whole delimiters at the end are already replaced).
        data = (self._carry + chunk).replace(self._old, self._new)
        cut = next((len(data) - j for j in range(len(self._old) - 1, 0, -1) if data.endswith(self._old[:j])), len(data))
        self._out += data[:cut]
        self._carry = data[cut:]

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while len(self._out) < len(buffer) and not self._eof:
            self._fill()
        size = min(len(buffer), len(self._out))
        buffer[:size] = self._out[:size]
        self._out = self._out[size:]
        return size

    def close(self) -> None:
        self._file.close()
        super().close()


def check_text(path: str) -> None:
    """A file that is not UTF-8 text (or holds a NUL byte) is a ``ValueError`` naming the
    line; read in chunks, so a large log costs one pass and no memory."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    lines = 1
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:
                line = lines + error.object[: error.start].count(b"\n")
                raise ValueError(f"{path}:{line}: not a UTF-8 text file (byte {error.object[error.start]:#04x})") from None
            if "\x00" in text:
                raise ValueError(f"{path}:{lines + text[: text.index(chr(0))].count(chr(10))}: not a text file (NUL byte)")
            lines += text.count("\n")
            if not chunk:
                return


def sample_lines(path: str, count: int = 200) -> List[str]:
    """The first ``count`` non-empty lines."""
    found: List[str] = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # a byte-order mark is no name
        for line in f:
            if line.strip():
                found.append(line.rstrip("\r\n"))
                if len(found) == count:
                    break
    return found
