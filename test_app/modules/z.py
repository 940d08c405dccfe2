"""Example module for stubnet: register it with rm:test_app/modules/z.py."""
import time


#%function%
def add_prams(a, b):
    """Adds two numbers."""
    return a + b


#%function%
def div_prams(a, b):
    """Divides a by b (try b=0 for a remote ZeroDivisionError)."""
    return a / b


#%function%
def greet(name: str, greeting: str = "hello", *, punctuation: str = "!") -> str:
    """Greets someone, with defaults and a keyword-only argument."""
    return f"{greeting}, {name}{punctuation}"


#%function%
def stats(values: list) -> dict:
    """Returns the count, sum and mean of a list of numbers as a map."""
    total = sum(values)
    return {"count": len(values), "sum": total, "mean": total / len(values) if values else None}


#%function%
def fail(message="something went wrong"):
    """Raises a ValueError with the given message."""
    raise ValueError(message)


#%function%
def slow(seconds: float = 1.0):
    """Sleeps, then returns how long it slept: a stand-in for an instrument scan."""
    time.sleep(seconds)
    return seconds


def _helper():
    # Not exported: no marker.
    return None
