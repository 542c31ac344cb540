"""Output on any terminal encoding: ASCII stand-ins for the symbols the suite prints (±, −, arrows, Δ, †, dashes,
box drawing, ...), used where the output stream's encoding cannot write a character, instead of a
``UnicodeEncodeError`` that loses the output.

The CLI installs the stand-ins on stdout and stderr (:func:`use_ascii_fallbacks`) as the streams' encoding error
handler, so every command's output goes through them: rich tables (rich itself draws ASCII boxes on a terminal
that is not UTF-8), the Markdown, CSV, LaTeX and JSON formats, progress lines and error lines. A UTF-8 terminal
(or a latin-1 one for ±) is unchanged: only characters the encoding lacks are replaced. Files the suite writes are
always UTF-8, whatever the terminal.
"""

from __future__ import annotations

import codecs
import unicodedata
from typing import Any

ERROR_HANDLER = "probseg-ascii"
"""The name of the codec error handler registered by :func:`use_ascii_fallbacks`."""

ASCII_FALLBACKS: dict[str, str] = {
    "±": "+-", "−": "-", "–": "-", "—": "--", "‐": "-", "‑": "-",
    "↓": "(lower)", "↑": "(higher)", "→": "->", "←": "<-", "↔": "<->", "⇒": "=>",
    "Δ": "delta", "σ": "sigma", "μ": "mu", "α": "alpha", "β": "beta", "ε": "epsilon", "λ": "lambda",
    "†": "*", "‡": "**", "…": "...", "°": " deg", "×": "x", "·": ".", "•": "*",
    "≤": "<=", "≥": ">=", "≠": "!=", "≈": "~", "∞": "inf", "√": "sqrt",
    "‘": "'", "’": "'", "“": '"', "”": '"', "✓": "ok", "✔": "ok", "✗": "x", "✘": "x",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ",
}
"""The suite's own symbols and their ASCII stand-ins (``↓`` -> ``(lower)``: a column where lower is better)."""


def ascii_fallback(char: str) -> str:
    """An ASCII stand-in for one character: :data:`ASCII_FALLBACKS`; box drawing -> ``-``, ``|`` or ``+``; block
    elements -> ``#``; braille (spinners) -> ``*``; a combining mark -> nothing; a letter with an accent -> the
    letter (``á`` -> ``a``); anything else -> its Python escape (``\\u4e2d``; a lone surrogate from an undecodable
    file name: ``\\xNN``, its byte)."""
    if char in ASCII_FALLBACKS:
        return ASCII_FALLBACKS[char]
    code = ord(char)
    if code < 128:
        return char
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the byte that was not decodable
        return f"\\x{code - 0xDC00:02x}"
    if 0x2500 <= code <= 0x257F:
        name = unicodedata.name(char, "")
        return "-" if "HORIZONTAL" in name and "VERTICAL" not in name else "|" if (
            "VERTICAL" in name and "HORIZONTAL" not in name) else "+"
    if 0x2580 <= code <= 0x259F:
        return "#"
    if 0x2800 <= code <= 0x28FF:
        return "*"
    if unicodedata.combining(char):
        return ""
    plain = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode("ascii")
    return plain if plain.strip() else char.encode("ascii", "backslashreplace").decode("ascii")


def to_ascii(text: str) -> str:
    """``text`` with every non-ASCII character replaced by :func:`ascii_fallback`."""
    return "".join(ascii_fallback(ch) for ch in text) if not text.isascii() else text


def _handler(exc: UnicodeError) -> tuple[bytes, int]:
    """The codec error handler: ASCII stand-ins; a lone surrogate of ``surrogateescape`` (an undecodable byte of a
    file name) is written as that byte, as ``surrogateescape`` does."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    out = b"".join(bytes([ord(ch) - 0xDC00]) if 0xDC80 <= ord(ch) <= 0xDCFF else ascii_fallback(ch).encode("ascii")
                   for ch in exc.object[exc.start:exc.end])
    return out, exc.end


codecs.register_error(ERROR_HANDLER, _handler)


def use_ascii_fallbacks(*streams: Any) -> None:
    """Make each text stream (``sys.stdout``, ``sys.stderr``) write :func:`ascii_fallback` for a character its
    encoding cannot write, where it would raise ``UnicodeEncodeError`` (error handler ``strict``, or
    ``surrogateescape``, Python's choice under the C locale, whose undecodable bytes are still written as they
    were); streams that already replace or escape, and objects that are not reconfigurable text streams (a test's
    capture), are left as they are."""
    for stream in streams:
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and getattr(stream, "errors", None) in ("strict", "surrogateescape"):
            try:
                reconfigure(errors=ERROR_HANDLER)
            except (ValueError, OSError):  # a closed or detached stream: nothing to print on anyway
                pass


__all__ = ["ASCII_FALLBACKS", "ERROR_HANDLER", "ascii_fallback", "to_ascii", "use_ascii_fallbacks"]
