from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, Literal, Optional, TypeVar, Union, overload

T = TypeVar("T")


class Tree(Generic[T]):
    pass


def index(words: dict[str, list[int]], key: str = "") -> dict[str, list[int]]:
    return words


def schedule(cb: Callable[[int, str], Awaitable[None]], when: "datetime.datetime | None" = None) -> "asyncio.Task[None]":
    ...


def walk(tree: Optional["Tree[T]"], order: Literal["pre", "in", "post"] = "pre") -> list[T]:
    return []


def union(x: Union[int, str, None], y: int | str | None = None) -> tuple[int | str, ...]:
    return ()


@overload
def parse(data: bytes) -> dict[str, object]: ...
@overload
def parse(data: str) -> dict[str, object]: ...
def parse(data: bytes | str, *, strict: bool = True) -> dict[str, object]:
    """Parse `data`; the overloads above are replaced by this definition."""
    return {}


def nested_generics(m: dict[tuple[int, int], list[dict[str, set[frozenset[int]]]]] = {}) -> None:
    pass
