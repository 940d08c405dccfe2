def triple_double():
    """Triple double quotes."""


def triple_single():
    '''Triple single quotes.'''


def leading_blank_lines():
    """

       Summary after blank lines.
    Details.
    """


def raw_docstring():
    r"""Raw \d+ docstring with \n escapes kept."""


def escaped_newline():
    "First\nsecond"


def concatenated():
    "Implicitly " "concatenated."


def bytes_is_not_a_doc():
    b"""Bytes are not a docstring."""


def fstring_is_not_a_doc():
    f"""An f-string is not a docstring."""


def doc_not_first():
    x = 1
    """Not a docstring: not the first statement."""


def empty_docstring():
    """   """


def one_liner(): "One-liner docstring."


def unicode_prefix():
    U"""Unicode prefix."""


def continued():
    """\
    Backslash-continued first line."""
