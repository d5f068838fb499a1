"""Type stub of the optional C extension schoolnet/_speedups.c."""

from typing import Any

def uniform_types(rows: list[Any], nt: int, nf: int, max_tag_len: int, max_str_len: int,
                  check_floats: bool, check_ints: bool, /) -> tuple[type, ...] | None:
    """The value types of rows that pass the uniform-group checks, else None."""

def format_rows(rows: Any, cols: tuple[int, ...], kinds: bytes, segments: tuple[bytes, ...],
                suffix: bytes, /) -> list[str] | None:
    """Line protocol lines of rows without characters to escape, else None."""

def row_keys(rows: Any, names: tuple[str, ...], base: int, /) -> list[int]:
    """The series hash of each row: base XOR hash((name, value)) per tag column."""
