"""Text that reaches a terminal.

Key names, paths and error messages come from object stores and file trees
that anyone may have filled: a key holding ``ESC [ 2 J`` or a right-to-left
override would repaint or disguise what the CLI prints. Everything the CLI
shows a person goes through :func:`printable`; JSON output needs nothing
(``json.dumps`` escapes controls itself).
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on shown as a
    Python-style escape: C0 and C1 controls, DEL, format characters such as
    bidirectional overrides, line and paragraph separators, and lone surrogates
    (names that were not UTF-8) become ``\\x1b``, ``\\u202e``, ``\\udcff``.
    Printable text, backslashes included, is left as it is."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
            continue
        code = ord(ch)
        if code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)
