"""A module saved with Windows line endings."""
from typing import Optional


def greet(name: str,
          greeting: str = "Hello",  # a comment
          punctuation: Optional[str] = None) -> str:
    """Return a greeting.

    Works the same with CRLF and LF line endings.
    """
    return f"{greeting}, {name}{punctuation or '!'}"


def table(rows=[
    ("a", 1),
    ("b", 2),
], sep="\t"):
    r"""
    Format `rows` as text.
    """
    return "\n".join(sep.join(map(str, r)) for r in rows)


async def _hidden():
    pass
