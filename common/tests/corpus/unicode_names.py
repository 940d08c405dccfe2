"""Módulo con identificadores Unicode — ñandú, 数据, π."""

π = 3.141592653589793


def größe(länge: float, breite: float = 1.0, *, einheit: str = "m²") -> float:
    """Berechnet die Fläche — „Größe“ eines Rechtecks."""
    return länge * breite


def 数据(值: "列表[int]" = None, 名字="默认") -> "字典":
    """返回数据。

    第二行。
    """
    return {}


def kreis(r=π, *, label="Ø ≈ 2πr 🌍"):
    "Emoji und Sonderzeichen: 🌍 ✓"
    return 2 * π * r


def café(crème="brûlée", /):
    return crème
