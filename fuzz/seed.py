"""Writes the starting corpora of the fuzz targets into corpus/ (git-ignored).

frame_decoder: every example frame of PROTOCOL.md, alone and all of a direction's frames in one
stream, behind the 3-byte header check_frame_decoder reads (kind, frame cap, feed).
pyparse: the parser's own test corpus, common/tests/corpus/*.py.

Run from fuzz/: python3 seed.py
"""

import pathlib
import re
import shutil

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
# The header's kind byte for each PROTOCOL.md section.
KINDS = {
    "Client stub → server": 0,
    "Server → client stub": 1,
    "App → its local client stub": 2,
    "Local client stub → app": 3,
}


def frame_decoder(out: pathlib.Path) -> int:
    doc = (ROOT / "PROTOCOL.md").read_text(encoding="utf-8")
    count = 0
    for section in re.split(r"^## ", doc, flags=re.M):
        kind = KINDS.get(section.split("\n", 1)[0].strip())
        if kind is None:
            continue
        frames = [f.encode() for f in re.findall(r'```json\n(\{"cmd".*?)\n```', section)]
        for i, frame in enumerate(frames):
            # Cap 4096 read at once, and cap 256 fed 7 bytes at a time.
            for limit, feed in [(4, 0), (3, 7)]:
                (out / f"{kind}-{i}-{limit}-{feed}").write_bytes(
                    bytes([kind, limit, feed]) + frame + b"\n"
                )
                count += 1
        # Everything at once, with a blank line, garbage, an oversized line and a cut-off frame;
        # fed 5 bytes at a time with a "pending" before each read.
        stream = b"\n".join(frames) + b"\n\n  \r\nnot json\n" + b"x" * 300 + b"\n" + frames[0]
        (out / f"{kind}-all").write_bytes(bytes([kind, 3, 0x85]) + stream)
        count += 1
    return count


def pyparse(out: pathlib.Path) -> int:
    sources = sorted((ROOT / "common" / "tests" / "corpus").glob("*.py"))
    for source in sources:
        shutil.copy(source, out / source.name)
    return len(sources)


for name, fill in [("frame_decoder", frame_decoder), ("pyparse", pyparse)]:
    out = HERE / "corpus" / name
    out.mkdir(parents=True, exist_ok=True)
    print(f"corpus/{name}: {fill(out)} seed(s)")
