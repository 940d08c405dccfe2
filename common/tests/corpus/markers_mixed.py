"""Some functions are marked for export; the rest stay private to the owner."""
import os


#%function%
def exported_plain(a, b):
    """Marked: exported."""
    return a + b


def unmarked(a):
    """No marker above: not exported, although public."""
    return a


    #%function%   
def exported_indented_marker(x=1):
    """The marker line may carry whitespace around it."""
    return x


# %function%
def exported_spaced_marker():
    """A formatter's space after '#' is accepted."""


#%function%
# a second comment breaks the link
def not_exported_comment_between():
    pass


#%function%
class NotAFunction:
    #%function%
    def method(self):
        pass


#%function%
CONSTANT = 1
def right_after_constant():
    """The line above is code, not the marker."""


#%function%
def _private_but_marked(token: str) -> bool:
    """Markers override the underscore rule."""
    return bool(token)


def tail_comment():  #%function%
    """A marker at the end of a code line is no marker."""


def before_redefinition():
    pass


#%function%
def redefined(a):
    """First definition."""


def redefined(a, b=None):
    """Second definition: Python binds this one."""


#%function%
def also_exported(*paths: os.PathLike) -> list[str]:
    return [os.fspath(p) for p in paths]
