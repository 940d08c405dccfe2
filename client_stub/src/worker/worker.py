"""stubnet worker: imports one Python module by path and runs its functions, one call at a time.

Run as `python3 -u -c <this script> LIFELINE <module_path> [SIZE]`, or `... LIFELINE import:NAME`
for an installed module exposed by name, or `... LIFELINE --describe NAME` to print an installed
module's descriptor, leading a process group of its own; with SIZE, the stub first writes SIZE
bytes, the module's source as the stub last read it, which runs as the file at <module_path>
(whatever that file holds now: an edit the stub refused to reload is not run); LIFELINE is the
read end of a pipe that reads end of file once the stub has ended (see `watch_stub`); if either
is wrong, the worker says why and goes no further. The protocol uses the process's original stdin and stdout, one JSON object
per line:
  stub -> worker, first:  SIZE bytes of source, if SIZE was given
  worker -> stub, once:   {"ready": true}  or  {"ready": false, "error": {...}} (then exit 1),
                          with "unwatched": true if it could not watch for the stub's end
  stub -> worker:         [N, "f", [args...], D]  or  [N, "f", [args...], D, {kwargs...}]
  worker -> stub:         {"id": N, "ok": VALUE}  or  {"id": N, "error": {...}}
where an error is {"type": "ZeroDivisionError", "message": "...", "traceback": "..."} (with
"kind": "unknown_function" for a function the module does not have, see `NoFunction`), and D is
the call's deadline in ms of CLOCK_MONOTONIC (what `time.monotonic()` reads): a call is not
started past it, and SIGUSR1 from the stub interrupts a call running past it (`CallTimedOut`).
Only the worker reads and writes the protocol: not a process the module forks (see
`keep_forks_off_the_protocol`).
"""

import asyncio
import importlib.util
import inspect
import json
import json.encoder
import json.scanner
import math
import os
import signal
import stat
import sys
import traceback
from time import monotonic
from types import CoroutineType

ALLOWED = "None, bool, int, float, str, list, dict with str keys"
HERE = inspect.currentframe().f_code.co_filename  # "<string>" under `python -c`


def take_protocol_pipes():
    """Keeps the real stdin/stdout for the protocol and points fds 0 and 1 elsewhere.

    Whatever the module prints (even from C code) then goes to stderr, and whatever it reads
    from stdin finds end of file, so neither can corrupt the protocol.
    """
    # Binary: each line is decoded once, and each answer is one os.write, no text layer between.
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    return proto_in, proto_out


def keep_forks_off_the_protocol(proto_in, proto_out):
    """Takes the protocol pipes from every process the module forks (`os.fork`, `multiprocessing`
    forking); returns a list that stays empty in the worker and is not in such a child.

    A child shares the worker's pipes: one that went back into the worker's loop (it returned
    from the call, or the import, that forked it) would write a second answer to its parent's
    call and read calls meant for the worker. In the child, the pipes' fds are pointed at
    /dev/null, not closed: their numbers stay taken, so that nothing the child opens later gets
    one, which `proto_in`, closed when the child's interpreter ends, would close.
    The worker's loop ends a child that comes back to it (see `leave_forked`).
    """
    fds = (proto_in.fileno(), proto_out)
    forked = []

    def in_child():
        forked.append(True)  # first: a child whose pipes could not be taken still leaves
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in fds:
            os.dup2(devnull, fd, inheritable=False)
        os.close(devnull)

    os.register_at_fork(after_in_child=in_child)
    return forked


def leave_forked(what, exc=None):
    """Ends a process the module forked that came back to the worker's loop from `what` (the
    call or import that forked it, which raised `exc`): only the worker answers calls. Its exit
    status is the one Python gives for a return (0) or an exception (1), for the module's
    `os.waitpid`; nothing of the worker's (the module's `atexit`, its buffers) is run again."""
    how = "returned" if exc is None else f"raised {type(exc).__name__}"
    os.write(2, utf8(f"process {os.getpid()}, forked during {what}, {how} from it: it exits, "
                     "answering no call (end a forked child with os._exit)\n").encode())
    os._exit(0 if exc is None else 1)


def watch_stub(lifeline):
    """Leaves a watcher in this process group that kills the group once the stub has ended.

    The stub alone holds the write end of the pipe `lifeline` reads: it reads end of file once
    the stub has ended, however it ended (SIGKILL too). The watcher, not the worker, waits for
    it: it runs no module code and ignores every signal it can, so nothing the module does (a
    signal caught or blocked, C code that never returns, a SIGTERM to its whole group) keeps it
    from killing the group, the worker, what the module started and itself. Forked twice, so
    that it is no child of the worker: a module waiting for its own children, or ending them,
    never meets it.

    Raises OSError if `lifeline` is no pipe, or this process leads no group of its own (run
    by hand, the group could be a shell's job), checked before anything is forked; or if the
    watcher could not start. The worker would not end with the stub: it must not run.
    """
    if not stat.S_ISFIFO(os.fstat(lifeline).st_mode):
        raise OSError("it is not a pipe")
    group = os.getpgrp()
    if group != os.getpid():
        raise OSError(f"process {os.getpid()} does not lead its process group ({group})")
    child = os.fork()
    if child:
        os.close(lifeline)
        if os.waitpid(child, 0)[1]:
            raise OSError("the watcher did not start")
        return
    try:  # in the child, which must never return into `main`
        # Ignores every signal it can (a module may signal its whole group), set before the
        # second fork so that the watcher is deaf from its start: the module runs only once
        # this child has exited.
        for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
            try:
                signal.signal(signum, signal.SIG_IGN)
            except (OSError, ValueError):  # one the platform does not let a process ignore
                pass
        if os.fork():
            os._exit(0)
        # The stub's pipes end with the worker, not with the watcher.
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        # Nothing is ever written: only end of file ends the wait (os.read retries by itself
        # when interrupted, PEP 475).
        while os.read(lifeline, 1):
            pass
        os.killpg(group, signal.SIGKILL)
    finally:
        # Only on an unexpected error: the worker goes on, unwatched, until the stub ends it.
        os._exit(1)


def import_module(path, source=None):
    """Imports the file at `path` as a module named after its stem (or `import:NAME` by name).

    With `source` (bytes), that runs instead of what the file holds, as the file would: its
    `__file__` is `path`, its tracebacks name it, and files beside it import as siblings.
    """
    if path.startswith("import:"):
        return importlib.import_module(path[len("import:"):])
    path = os.path.abspath(path)
    name = os.path.splitext(os.path.basename(path))[0]
    sys.path.insert(0, os.path.dirname(path))  # so the module's sibling imports work
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if source is None:
        spec.loader.exec_module(module)
    else:
        # What the file's loader does with the file's bytes (a coding line applies here too).
        exec(compile(source, path, "exec", dont_inherit=True), module.__dict__)
    return module


def read_source(proto_in, size):
    """The `size` bytes of source the stub writes first."""
    source = proto_in.read(int(size))
    if len(source) != int(size):
        raise EOFError(f"the stub sent {len(source)} bytes of the module's {size}")
    return source


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
    error = {"type": utf8(type(exc).__name__), "message": utf8(message), "traceback": utf8(text)}
    if type(exc) is NoFunction:
        error["kind"] = "unknown_function"
    return error


def utf8(text):
    """`text` with any lone surrogate (a name os.listdir decoded from bytes not UTF-8) written
    as its escape, `\\udcff`: the stub reads an exception's text, which must be UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class NoFunction(AttributeError):
    """The module has no function of the name called: the stub checked the call against the
    module's headers, but a reload took the function away while the call was queued. Answered
    as the stub answers a call to a function it does not know (`"kind": "unknown_function"`)."""


class CallTimedOut(BaseException):
    """Raised inside a call that runs past its caller's timeout. A BaseException, as
    KeyboardInterrupt is, so that the module's own `except Exception` does not swallow it."""


# Results of these types need no check (a float may be NaN, so it is checked).
SCALARS = frozenset((int, str, bool, type(None)))


def encoder():
    """The encoder of the protocol's values, built once.

    `json.dumps` and `JSONEncoder.encode` build an encoder per call; the C encoder they wrap is
    called directly.
    """
    fallback = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
    make = json.encoder.c_make_encoder
    if make is None:  # a Python without the _json accelerator
        return fallback.encode
    # No circular-reference markers (`check_json` walks every container first), no NaN.
    c_encode = make(None, fallback.default, json.encoder.encode_basestring_ascii, None,
                    ":", ",", False, False, False)

    def encode(value):
        if type(value) is str:
            return json.encoder.encode_basestring_ascii(value)
        return "".join(c_encode(value, 0))

    return encode


def check_int(value, where="result"):
    """Raises TypeError for an integer the other side would read as an approximate float."""
    if not -0x8000000000000000 <= value <= 0xFFFFFFFFFFFFFFFF and type(value) is not bool:
        what = "below -2**63" if value < 0 else f"of {value.bit_length()} bits"
        raise TypeError(f"{where} is an integer {what}; JSON between stubs carries integers from "
                        "-2**63 to 2**64-1 exactly: send it as a string or a float")


def check_json(value, where="result"):
    """Raises TypeError naming the first value that JSON cannot carry."""
    if isinstance(value, int):
        check_int(value, where)
        return
    if value is None or isinstance(value, str):
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


def call(module, name, args, kwargs):
    """Runs one call and returns its result; raises what the call raises. A plain value
    (not a function), asked for with no arguments, is read."""
    func = getattr(module, name, None)
    if not callable(func):
        if func is not None and not args and not kwargs:
            check_json(func, f"{module.__name__}.{name}")
            return func
        raise NoFunction(f"module '{module.__name__}' has no function '{name}'")
    return settled(func(*args, **kwargs) if kwargs else func(*args))


def settled(result):
    """`result`, ready to send: an `async def` function's coroutine is run, and what is not
    a plain scalar is checked."""
    if type(result) in SCALARS:
        return result
    if type(result) is CoroutineType:
        result = run_coroutine(result)
    check_json(result)
    return result


LOOP = None  # the worker's event loop, once an `async def` function is called


def run_coroutine(coroutine):
    """Runs an `async def` function's coroutine to its end on the worker's one event loop: what
    a module keeps between calls (a lock, a semaphore, a client session, a task it started) stays
    bound to the loop it was made on, as in a program that runs one loop. One interrupted (past
    its timeout) is cancelled before the error is sent, so that its `finally` runs now."""
    global LOOP
    if LOOP is None:
        LOOP = asyncio.new_event_loop()
        asyncio.set_event_loop(LOOP)
    task = LOOP.create_task(coroutine)
    try:
        return LOOP.run_until_complete(task)
    except BaseException:
        if not task.done():
            task.cancel()
            try:
                LOOP.run_until_complete(task)
            except BaseException:  # its cancellation, or what its cleanup raised
                pass
        raise


KINDS = {
    inspect.Parameter.POSITIONAL_ONLY: "positional_only",
    inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional",
    inspect.Parameter.VAR_POSITIONAL: "var_positional",
    inspect.Parameter.KEYWORD_ONLY: "keyword_only",
    inspect.Parameter.VAR_KEYWORD: "var_keyword",
}


def leading_id(line):
    """The id a request line starts with (`[ID,...`), for a line that cannot be decoded whole
    (arguments nested past Python's recursion limit): its call is still answered."""
    try:
        return int(line[1 : line.index(b",")])
    except ValueError:
        return None


def text_of(annotation):
    return getattr(annotation, "__name__", None) or str(annotation)


def describe_function(name, func):
    """A function's header in the descriptor's terms; `(*args, **kwargs)` when unknown."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        params = [{"name": "args", "kind": "var_positional"}, {"name": "kwargs", "kind": "var_keyword"}]
        sig = None
    if sig is not None:
        params = []
        for p in sig.parameters.values():
            param = {"name": p.name, "kind": KINDS[p.kind]}
            if p.default is not inspect.Parameter.empty:
                param["default"] = repr(p.default)
            if p.annotation is not inspect.Parameter.empty:
                param["annotation"] = text_of(p.annotation)
            params.append(param)
    desc = {"name": name, "params": params}
    if sig is not None and sig.return_annotation is not inspect.Signature.empty:
        desc["returns"] = text_of(sig.return_annotation)
    doc = (inspect.getdoc(func) or "").strip().splitlines()
    if doc:
        desc["doc"] = doc[0].strip()
    return desc


def describe(name):
    """The descriptor of installed module `name`: its public functions and plain values."""
    module = importlib.import_module(name)
    functions, attributes = [], []
    for attr in sorted(vars(module)):
        value = getattr(module, attr)
        if attr.startswith("_") or inspect.ismodule(value) or inspect.isclass(value):
            continue
        if inspect.isroutine(value):
            functions.append(describe_function(attr, value))
        elif value is None or isinstance(value, (bool, int, str)) or (
            isinstance(value, float) and math.isfinite(value)
        ):
            attributes.append(attr)
    return {"module": name, "functions": functions, "attributes": attributes}


def main():
    # Only the stub decides this process's end: SIGINT is ignored. (Ctrl-C at the stub's terminal
    # does not reach it anyway: it leads a process group of its own.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lifeline = sys.argv.pop(1)
    try:
        watch_stub(int(lifeline))
        unwatched = None
    except (OSError, ValueError) as exc:  # reported below, where the stub reads it
        unwatched = OSError(f"cannot watch for the stub's end on fd {lifeline}: {exc}")
    running = [0, ""]  # the deadline and name of the call running; 0 while none runs

    def overdue(_signum, _frame):
        """The stub's SIGUSR1: it interrupts the call running only if that call is past its
        deadline (the signal may land just as the next call starts), and only once."""
        deadline = running[0]
        if deadline and monotonic() * 1000 >= deadline:
            running[0] = 0
            raise CallTimedOut(f"interrupted: the call to {running[1]} ran past its timeout")

    signal.signal(signal.SIGUSR1, overdue)
    proto_in, proto_out = take_protocol_pipes()
    forked = keep_forks_off_the_protocol(proto_in, proto_out)

    encode = encoder()
    # C, or its pure-Python twin: either raises StopIteration(position) for what is not JSON.
    scan = json.scanner.make_scanner(json.JSONDecoder())
    write = os.write

    def send(data):
        while data:
            data = data[write(proto_out, data):]

    if sys.argv[1] == "--describe":
        if unwatched is not None:
            sys.exit(str(unwatched))  # to stderr, whose last line the stub reports
        # What the import prints went to stderr: the description is all stdout carries.
        send((json.dumps(describe(sys.argv[2])) + "\n").encode())
        return

    def failure(request_id, exc):
        return (encode({"id": request_id, "error": error_of(exc)}) + "\n").encode()

    if unwatched is not None:  # no import is tried: the stub must not say one failed
        send((encode({"ready": False, "error": error_of(unwatched), "unwatched": True}) + "\n").encode())
        sys.exit(1)
    try:
        source = read_source(proto_in, sys.argv.pop(2)) if len(sys.argv) > 2 else None
        module = import_module(sys.argv[1], source)
    except BaseException as exc:  # a SystemExit at import fails it too
        if forked:  # in a child the import forked: it ends as it asked, or leaves
            if isinstance(exc, SystemExit):
                raise
            leave_forked(f"the import of {sys.argv[1]}", exc)
        send((encode({"ready": False, "error": error_of(exc)}) + "\n").encode())
        sys.exit(1)
    if forked:
        leave_forked(f"the import of {sys.argv[1]}")
    send(b'{"ready":true}\n')

    # One call at a time, in order: a module holding state never sees two calls at once.
    # The common case (a function, no keyword arguments, a plain result) runs inline, step by
    # step: the interpreter's own work is most of what a call costs here.
    for line in iter(proto_in.readline, b""):
        request_id = None
        try:
            text = line.decode()
            try:
                request, end = scan(text, 0)
            except StopIteration as stop:  # what `json.loads` reports for it
                raise json.JSONDecodeError("Expecting value", text, stop.value) from None
            if end + 1 != len(text) and text[end:].strip():
                raise ValueError(f"extra data after the request at column {end + 1}")
            if len(request) == 4:
                request_id, name, args, deadline = request
                kwargs = None
            else:
                request_id, name, args, deadline, kwargs = request
            if monotonic() * 1000 >= deadline:
                raise CallTimedOut(f"not run: its timeout passed before the call to {name} began")
            running[1], running[0] = name, deadline  # the deadline last: it arms `overdue`
            try:
                func = getattr(module, name, None)
                if kwargs or not callable(func):
                    result = call(module, name, args, kwargs)
                else:
                    result = func(*args)
                    if type(result) not in SCALARS:
                        result = settled(result)
            finally:
                running[0] = 0
            if forked:
                leave_forked(f"the call to {name}")
            # The envelope is formatted, not encoded: the id is the stub's integer.
            # The common case, an int that fits 64 bits, is checked inline (a call costs more).
            if type(result) is int and -0x8000000000000000 <= result <= 0xFFFFFFFFFFFFFFFF:
                answer = b'{"id":%d,"ok":%d}\n' % (request_id, result)
            else:
                if type(result) is int:
                    check_int(result)  # raises: beyond 64 bits
                answer = b'{"id":%d,"ok":%s}\n' % (request_id, encode(result).encode())
        except SystemExit:  # the module asks its process to end: the stub restarts it
            raise
        except BaseException as exc:  # KeyboardInterrupt too: SIGINT is ignored, the module raised it
            if forked:
                leave_forked(f"the call to {running[1]}", exc)
            if request_id is None:
                request_id = leading_id(line)
            answer = failure(request_id, exc)
        written = write(proto_out, answer)
        if written != len(answer):  # a pipe takes a short line whole, a long one maybe not
            send(answer[written:])


main()
