from typing import Any


def pos_only(a, b, /):
    return a + b


def mixed(a, b=1, /, c=2, *, d, e=3, **kw):
    return a, b, c, d, e, kw


def star_args(*args: int, **kwargs: Any) -> None:
    pass


def kw_only(*, key: str, default: object = None):
    pass


def everything(p1: int, p2: "str" = "x", /, n1: float = 1.5, *rest: bytes, k1: bool, k2: bool = False, **options: dict[str, Any]) -> tuple[int, ...]:
    return ()


def no_params() -> None:
    pass


def trailing_comma(
    a,
    b,
):
    pass
