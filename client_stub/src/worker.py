"""stubnet worker: imports one Python module by path and runs its functions, one call at a time.

Run as `python3 -u -c <this script> <module_path>`. The protocol uses the process's original
stdin and stdout, one JSON object per line:
  worker -> stub, once:   {"ready": true}  or  {"ready": false, "error": {...}} (then exit 1)
  stub -> worker:         {"id": N, "function": "f", "args": [...], "kwargs": {...}}
  worker -> stub:         {"id": N, "ok": VALUE}  or  {"id": N, "error": {...}}
where an error is {"type": "ZeroDivisionError", "message": "...", "traceback": "..."}.
"""

import asyncio
import importlib.util
import inspect
import json
import math
import os
import signal
import sys
import traceback

ALLOWED = "None, bool, int, float, str, list, dict with str keys"
HERE = inspect.currentframe().f_code.co_filename  # "<string>" under `python -c`


def take_protocol_pipes():
    """Keeps the real stdin/stdout for the protocol and points fds 0 and 1 elsewhere.

    Whatever the module prints (even from C code) then goes to stderr, and whatever it reads
    from stdin finds end of file, so neither can corrupt the protocol.
    """
    proto_in = os.fdopen(os.dup(0), "r", encoding="utf-8")
    proto_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def import_module(path):
    """Imports the file at `path` as a module named after its stem."""
    path = os.path.abspath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, os.path.dirname(path))  # so the module's sibling imports work
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def error_of(exc):
    """The protocol's description of an exception, its traceback without this file's frames."""
    tb = exc.__traceback__
    while tb is not None and (
        tb.tb_frame.f_code.co_filename == HERE
        or tb.tb_frame.f_code.co_filename.startswith("<frozen importlib")
    ):
        tb = tb.tb_next
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    try:
        message = str(exc)
    except Exception:
        message = f"<unprintable {type(exc).__name__}>"
    return {"type": type(exc).__name__, "message": message, "traceback": text}


def check_json(value, where="result"):
    """Raises TypeError naming the first value that JSON cannot carry."""
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if math.isfinite(value):
            return
        raise TypeError(f"{where} of type float ({value}) is not JSON (allowed: {ALLOWED})")
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_json(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                kind = type(key).__name__
                raise TypeError(f"{where} has a key of type {kind}; JSON keys are str")
            check_json(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where} of type {type(value).__name__} is not JSON (allowed: {ALLOWED})")


def call(module, request):
    """Runs one request and returns its result; raises what the call raises."""
    name = request["function"]
    func = getattr(module, name, None)
    if not callable(func):
        raise AttributeError(f"module '{module.__name__}' has no function '{name}'")
    result = func(*request.get("args", []), **request.get("kwargs", {}))
    if inspect.iscoroutine(result):  # an `async def` function
        result = asyncio.run(result)
    check_json(result)
    return result


def main():
    # Ctrl-C at the stub's terminal reaches this process too: only the stub decides its end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    proto_in, proto_out = take_protocol_pipes()

    def send(text):
        proto_out.write(text + "\n")
        proto_out.flush()

    try:
        module = import_module(sys.argv[1])
    except BaseException as exc:  # a SystemExit at import fails it too
        send(json.dumps({"ready": False, "error": error_of(exc)}))
        sys.exit(1)
    send(json.dumps({"ready": True}))

    # One call at a time, in order: a module holding state never sees two calls at once.
    for line in proto_in:
        request_id = None
        try:
            request = json.loads(line)
            request_id = request["id"]
            send(json.dumps({"id": request_id, "ok": call(module, request)}, allow_nan=False))
        except Exception as exc:  # SystemExit still ends the worker, like os._exit
            send(json.dumps({"id": request_id, "error": error_of(exc)}))


main()
