import re

PATTERN = re.compile(r"\d+")


def render(
    template: str,  # the template text (may contain ')')
    context: dict = {"open": "(", "close": ")"},  # braces: {}
    *,
    # a comment on its own line inside the signature
    sep: str = ", ",
    marker: str = "#",  # not a comment start
    on_error=lambda exc, ctx=(1, [2, {3: (4,)}]): (print(exc), ctx),
    matrix=[[1, 2], [3, 4]],
    pattern=PATTERN.pattern + r"(?:\))",
) -> str:
    """Render `template` with `context`."""
    return template.format(**context)


def call_with_tuple(fn, args=(  # opening paren then comment
        "a)", 'b#', """c
d"""), kw=dict(
            x=1,
            y=(2 + 3) * 4,
        )):
    return fn(*args, **kw)


def ternary(x=1 if True else 2, y=not False, z=-1, w=..., v=None, u=b"bytes)"):
    return x, y, z, w, v, u
