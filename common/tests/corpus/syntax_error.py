"""A module with a syntax error well after its first functions."""
import json


def load(path: str) -> dict:
    """Load a JSON file."""
    with open(path) as fh:
        return json.load(fh)


def dump(data, path, *, indent=2):
    with open(path, "w") as fh:
        json.dump(data, fh, indent=indent)


class Cache:
    def __init__(self):
        self.items = {}

    def get(self, key, default=None)
        return self.items.get(key, default)
