from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not run on import: not exported
    def typed_only(x: int) -> int: ...


class Repository:
    """A class: its methods are not exported."""

    def __init__(self, path):
        self.path = path

    def commit(self, message: str) -> str:
        """Not exported."""
        return message

    @staticmethod
    def parse(text):
        return text

    async def push(self):
        pass


def outer(a, b=2):
    """Exported; its nested def is not."""

    def inner(c):
        return a + c

    class Local:
        def method(self):
            pass

    return inner(b)


try:  # run on import: exported
    def maybe():
        pass
except ImportError:
    pass


def last(x):
    """Exported."""
    return x
