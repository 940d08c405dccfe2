"""stubnet's helper for generated Python stubs: calls remote functions through the local client stub.

Written by stubnet beside the stubs it generates (one per directory); do not edit. One persistent
connection to the client stub's app port (127.0.0.1:$STUBNET_APP_PORT, default 8765, or
connect(port)) carries every call as newline-delimited JSON; replies are matched by id by a
reader thread, so threads may call at once. A call waits at most $STUBNET_TIMEOUT seconds
(default 30, or set_timeout(seconds)), connecting and writing its request included. A reply
line over $STUBNET_MAX_REPLY_BYTES (default 1 GiB) ends the connection. A remote
exception of a built-in type is raised as that type with the remote message (the remote
traceback in .remote_traceback, and as a note on 3.11+); timeouts raise TimeoutError; any other
failure raises RemoteError, whose .kind says what happened.
"""

import builtins
import sys


def _standard(*names):
    """The standard modules `names`, even where stubs of exposed modules with the same names
    (json.py, socket.py, ...) sit beside this file. The app that imports `json` here gets the
    stub (maybe half-made: it is importing this file), so while the real ones load, this
    directory is off the path and its stubs are out of sys.modules. Afterwards the stubs are
    back, and a real module this loaded that a stub here shadows is dropped again: the app's
    `import json` still finds the stub, whichever it imports first."""
    here = _parent(__file__)
    path, modules = sys.path[:], dict(sys.modules)
    stubs = {n: m for n, m in modules.items() if _parent(getattr(m, "__file__", None)) == here}
    sys.path[:] = [p for p in path if _entry(p) not in ("", ".", here)]
    for name in stubs:
        del sys.modules[name]
    try:
        found = [__import__(name) for name in names]
        import importlib.machinery
    finally:
        sys.path[:] = path
        sys.modules.update(stubs)
    for name in set(sys.modules).difference(modules):
        spec = "." not in name and importlib.machinery.PathFinder.find_spec(name)
        if spec and _parent(spec.origin) == here:
            del sys.modules[name]
    return found


def _parent(file):
    """The directory of `file` as the import system spells it (None for no file)."""
    if not isinstance(file, str):
        return None
    return file[: max(file.rfind("/"), file.rfind("\\"), 0)]


def _entry(entry):
    """A sys.path entry as the directory its finder searches (for "", the current one)."""
    finder = sys.path_importer_cache.get(entry)
    return getattr(finder, "path", entry).rstrip("/\\")


# Only these, loaded now: a standard module imported later, on the way (as the idna codec is for
# a host name given as text), would be a stub of that name where one sits beside this file.
ast, itertools, json, math, os, select, socket, threading, time = _standard(
    "ast", "itertools", "json", "math", "os", "select", "socket", "threading", "time"
)

DEFAULT_PORT = 8765
DEFAULT_TIMEOUT = 30.0
SECONDS = "a number of seconds above 0"  # what a timeout takes
# The longest line read from the stub ($STUBNET_MAX_REPLY_BYTES). A reply holds a result of up to
# the stub's max_frame_bytes (4 MiB by default), which this helper cannot know and a user may
# set far higher: the bound only keeps a program that is no stub (a wrong STUBNET_APP_PORT) from
# growing the reader until MemoryError, so it is generous. Such a program is found out sooner
# anyway: a line no stub would start (_STUB_LINE) is given up after _HEAD bytes.
DEFAULT_MAX_REPLY_BYTES = 1 << 30
MIN_REPLY_BYTES = 4096  # the smallest max_frame_bytes a stub may have


class RemoteError(Exception):
    """A call that failed other than by a built-in exception.

    .kind is the protocol's error kind (exception, unknown_module, unknown_function,
    bad_arguments, owner_gone, not_connected, worker_failed, too_large, ...); for a remote
    exception of a non-built-in type, .exc_type and .remote_traceback say what it was.
    """

    def __init__(self, kind, message, exc_type=None, remote_traceback=None):
        super().__init__(f"{exc_type}: {message}" if exc_type else f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback


class Default:
    """A default only the remote module can compute: shown as written, never sent."""

    __slots__ = ("text",)

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


_lock = threading.Lock()
_connection = None
_port = None
_timeout = None


def connect(port=None):
    """Uses the client stub listening on 127.0.0.1:`port` (default: $STUBNET_APP_PORT, else 8765),
    connecting within a call's timeout."""
    global _port, _connection
    with _lock:
        _port, old, _connection = port, _connection, None
    if old is not None:
        old.close()
    _connected(_call_timeout(), None)  # a wrong port fails here, not at the first call


def set_timeout(seconds):
    """Sets how long each call waits (None: $STUBNET_TIMEOUT, else 30 seconds). Anything but
    a number of seconds above 0 is refused here, not at the next call."""
    global _timeout
    if seconds is not None:
        value = None
        if isinstance(seconds, int) and not isinstance(seconds, bool):  # 10**400 is no float
            value = _seconds(min(seconds, threading.TIMEOUT_MAX)) if seconds > 0 else None
        elif isinstance(seconds, float):  # not a text, which float() would read
            value = _seconds(seconds)
        if value is None:
            raise ValueError(f"set_timeout({seconds!r}): it takes {SECONDS} (or None)")
        seconds = value
    _timeout = seconds


def call(module, function, /, *args, **kwargs):
    """Calls `module.function(*args, **kwargs)` on the network and returns its result."""
    return _call(module, function, list(args), kwargs)


def invoke(module, function, positional, varargs, keywords, varkw):
    """Binds a generated stub's arguments as the remote header binds them, then calls it.

    `positional` lists (name, may_go_by_keyword, value) in header order. A Default value is left
    out, so the remote applies its own default; the parameters after it then go by keyword.
    """
    args, kwargs, skipped = [], {}, None
    for name, by_keyword, value in positional:
        if isinstance(value, Default):
            skipped = skipped or name
        elif skipped is None:
            args.append(value)
        elif by_keyword:
            kwargs[name] = value
        else:
            raise TypeError(_cannot_pass(function, f"'{name}'", skipped))
    if varargs and skipped is not None:
        raise TypeError(_cannot_pass(function, "*args", skipped))
    args.extend(varargs)
    kwargs.update((k, v) for k, v in keywords.items() if not isinstance(v, Default))
    kwargs.update(varkw)
    return _call(module, function, args, kwargs)


def _cannot_pass(function, what, skipped):
    return (
        f"{function}(): cannot pass {what} by position while '{skipped}' is left to its default,"
        f" which only the remote module knows: give '{skipped}' a value"
    )


def _setting(name, default, read, takes):
    """$`name` as `read` reads it (None for a value out of range), or `default` if unset; a
    value it cannot read is refused naming the variable and what it takes."""
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        value = read(text)
    except ValueError:
        value = None
    if value is None:
        raise ValueError(f"${name} is {text!r}: it takes {takes}")
    return value


def _seconds(text):
    """Seconds to wait (None: not above 0, or not finite); the longest a wait can take
    (threading.TIMEOUT_MAX, centuries on most systems) for more, which a wait would refuse."""
    value = float(text)
    return min(value, threading.TIMEOUT_MAX) if 0 < value < float("inf") else None


def _tcp_port(text):
    value = int(text)
    return value if 0 < value < 65536 else None


REPLY_BYTES = f"a number of bytes, at least {MIN_REPLY_BYTES}"  # $STUBNET_MAX_REPLY_BYTES takes


def _bytes(text):
    value = int(text)
    return value if value >= MIN_REPLY_BYTES else None


def _call_timeout():
    if _timeout is None:
        return _setting("STUBNET_TIMEOUT", DEFAULT_TIMEOUT, _seconds, SECONDS)
    return _timeout


def _call(module, function, args, kwargs):
    timeout = _call_timeout()
    # Rounded up, to 1 ms at least: 0 would have the stub fail the call at once. (Rounded to
    # the microsecond first: 1.1 s is 1100.0000000000002 ms as a float.)
    timeout_ms = max(1, math.ceil(round(timeout * 1000, 3)))
    data = {"module": module, "function": function, "args": args, "timeout_ms": timeout_ms}
    if kwargs:
        data["kwargs"] = kwargs
    what = f"{module}.{function}"
    connection, spent = _connected(timeout, what)
    result = connection.request("call", data, timeout, what, spent)
    if "Ok" in result:
        return result["Ok"]
    raise _error(result.get("Err") or {}) from None


def _connected(timeout, what):
    """The connection, made (again) if there is none or the stub closed it, and the seconds
    that took: within `timeout`, or TimeoutError naming `what` (a call; None for connect()).
    A stopped stub whose backlog is full would hold a connect for minutes."""
    global _connection
    connection = _connection
    if connection is not None and not connection.closed:  # the common case: no lock, no clock
        return connection, 0
    port = _port or _setting("STUBNET_APP_PORT", DEFAULT_PORT, _tcp_port, "a port, 1 to 65535")
    longest = _setting("STUBNET_MAX_REPLY_BYTES", DEFAULT_MAX_REPLY_BYTES, _bytes, REPLY_BYTES)
    start = time.monotonic()
    if not _lock.acquire(timeout=timeout):  # another call is connecting
        raise _not_connected_within(what, port, timeout)
    try:
        if _connection is None or _connection.closed:
            left = timeout - (time.monotonic() - start)
            late = lambda: _not_connected_within(what, port, timeout)
            _connection = _Connection(port, left, late, longest)
        return _connection, time.monotonic() - start
    finally:
        _lock.release()


def _forked():
    """Run in the child of a fork (multiprocessing's default on Linux before Python 3.14): the
    connection, its ids and its calls in flight are the parent's, and its reader thread is not
    here, so the child forgets them and connects anew at its first call (its requests used to go
    out on the parent's connection, their answers to the parent's calls). Only the child's copy
    of the socket is closed, which leaves the parent's connection as it was (shutdown() would
    end it for both). _lock may be held by a thread of the parent's, which is not here."""
    global _lock, _connection
    _lock = threading.Lock()
    old, _connection = _connection, None
    if old is not None:
        old.closed = True  # a call on it, kept by the app, fails rather than write
        fd = old.sock.detach()  # the socket object closes nothing more, whatever holds it
        if fd >= 0:
            os.close(fd)


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forked)


def _not_connected_within(what, port, timeout):
    late = f"could not connect to the client stub at 127.0.0.1:{port} within {timeout} s"
    return TimeoutError(f"{what}: {late}" if what else late)


class _Connection:
    """One connection to the client stub; requests in flight are matched to replies by id."""

    def __init__(self, port, timeout, late, longest):
        """Connects within `timeout` seconds, or raises late(); reads lines of up to `longest`
        bytes (and a newline)."""
        # A socket of its own, not create_connection: its getaddrinfo imports the idna codec.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:  # the kernel gives up on a connect long before an hour
            self.sock.settimeout(max(min(timeout, 3600), 1e-3))
            self.sock.connect(("127.0.0.1", port))
        except socket.timeout:  # not TimeoutError before Python 3.10
            self.sock.close()
            raise late() from None
        except OSError as e:
            self.sock.close()
            raise RemoteError("not_connected", f"no client stub at 127.0.0.1:{port}: {e}") from None
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = port
        self.longest = longest
        self.head = min(_HEAD, longest + 1)  # the first read of each line
        self.ended = "the client stub closed the connection"  # why calls fail once it ends
        self.ids = itertools.count(1)
        self.waiting = {}  # id -> [threading.Event, result]
        # Reentrant: a signal handler's call may come while its thread holds it (each hold is one
        # step on `waiting`, which another step may come between), not wait for itself forever.
        self.lock = threading.RLock()
        self.send_lock = threading.Lock()  # held to write, with:
        self.unsent = b""  # the rest of a request a call began to write and ran out of time
        self.writable = select.poll()
        self.writable.register(self.sock, select.POLLOUT)
        self.closed = False
        try:
            threading.Thread(target=self._read, name="stubnet-replies", daemon=True).start()
        except RuntimeError:  # at interpreter shutdown (an atexit handler's call) on 3.12
            self.sock.close()
            raise

    def request(self, cmd, data, timeout, what, spent=0):
        """Sends one request and waits for its result ({"Ok": ...} or {"Err": ...}), writing
        and waiting within `timeout` seconds, of which `spent` went before (connecting)."""
        id_ = next(self.ids)
        # The id first: a stub that cannot read the rest can still answer this request.
        line = json.dumps({"cmd": cmd, "data": {"id": id_, **data}}, allow_nan=False)
        # json writes a key that is an int, float, bool or None as a str ({1: 'a', '1': 'b'} would
        # arrive as {'1': 'b'}) and cannot be told to refuse it: the arguments are searched for
        # such a key only if a dict is in them (a "{" past the request's own, or in a text).
        if line.count("{") > 2 + ("kwargs" in data):
            _refuse_keys(what, data.get("args", ()), data.get("kwargs", {}))
        # Its size is the stub's to check: it refuses, by this id, one over its frame limit.
        line = line.encode() + b"\n"
        slot = [threading.Event(), None]
        with self.lock:
            if self.closed:
                return _not_connected(self.ended)
            self.waiting[id_] = slot
        try:
            sent, deadline = self._send(line, max(timeout - spent, 0))
        except OSError as e:
            ended = self.closed  # by the reader (a line no stub sends): its reason, not EPIPE
            self.close()
            return _not_connected(self.ended if ended else f"lost the client stub: {e}")
        left = max(0, timeout - spent if deadline is None else deadline - time.monotonic())
        if sent is _SENT and slot[0].wait(left):
            return slot[1]
        with self.lock:
            self.waiting.pop(id_, None)
        if sent is _BEHIND:  # other calls' long requests: the stub may well be reading them
            late = f"not sent within {timeout} s (it waited all that time behind other calls' "
            late += "requests being written)"
        elif sent is _NOT_SENT:
            late = f"not sent within {timeout} s (the client stub is not reading)"
        elif sent is _BEGUN:  # not "not sent": the stub runs it once the next call ends it
            late = f"no answer within {timeout} s (its request was still being written: "
            late += "it goes with the next call)"
        else:
            late = f"no answer within {timeout} s"
        raise TimeoutError(f"{what}: {late}")

    def _send(self, line, timeout):
        """Writes `line` within `timeout` seconds: _SENT, _BEGUN (its rest is written first, by
        the next call: the stub would read the next request as its rest), _NOT_SENT, or _BEHIND
        (not sent: other calls held the turn to write all the while); and the deadline, None if
        it had no wait (then the whole timeout is left for the answer)."""
        if self.send_lock.acquire(blocking=False):
            deadline = None
        else:
            deadline = time.monotonic() + timeout
            if not self.send_lock.acquire(timeout=timeout):
                return _BEHIND, deadline
        try:
            sent = 0
            if not self.unsent:  # the common case: one send, no clock read and no copy
                try:
                    sent = self.sock.send(line, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    pass
                if sent == len(line):
                    return _SENT, deadline
            if deadline is None:
                deadline = time.monotonic() + timeout
            if self.unsent and not self._write(deadline):  # an earlier call's rest first
                return _NOT_SENT, deadline
            self.unsent = memoryview(line)[sent:]
            if self._write(deadline):
                return _SENT, deadline
            if len(self.unsent) == len(line):
                self.unsent = b""
                return _NOT_SENT, deadline
            return _BEGUN, deadline
        finally:
            self.send_lock.release()

    def _write(self, deadline):
        """Writes self.unsent, waiting for room in the socket until `deadline`: whether it went.
        The socket stays blocking for the reader thread, so each write is told not to wait."""
        while self.unsent:
            try:
                self.unsent = self.unsent[self.sock.send(self.unsent, socket.MSG_DONTWAIT) :]
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.writable.poll(min(left, 3600) * 1000)  # poll takes up to 24 days
        self.unsent = b""  # not a view holding the whole request
        return True

    def _read(self):
        try:
            with self.sock.makefile("rb") as lines:
                while True:
                    line = lines.readline(self.head)  # a whole reply, almost always
                    if line[-1:] != b"\n":
                        line = self._rest(line, lines)
                        if line is None:
                            break
                    try:
                        self._dispatch(json.loads(line))
                    except (ValueError, RecursionError, MemoryError) as e:  # from json.loads
                        if not self._undecodable(line, e):
                            break
                    except (AttributeError, TypeError):  # not a dict, or an id that is no key
                        self._end(f"sent a line no stub sends ({_head(line)})")
                        break
        except OSError:
            pass
        except MemoryError:  # reading a line under $STUBNET_MAX_REPLY_BYTES
            self._end("sent a line too long for this Python's memory")
        finally:
            self._fail_all()

    def _rest(self, head, lines):
        """The line that begins with `head`, a first read without its newline: read on to at
        most self.longest bytes if it begins as a stub's lines do; None if the connection ends
        (the stub closed it, or this ends it: not a stub's line, or over self.longest)."""
        if len(head) < self.head:  # the stub closed the connection (maybe within a line)
            return None
        if not head.startswith(_STUB_LINE):
            self._end(f"sent {len(head)} bytes of a line no stub sends ({_head(head)})")
            return None
        line = head + lines.readline(self.longest + 1 - len(head))
        if line[-1:] == b"\n":
            return line
        if len(line) > self.longest:
            self._end(f"sent a line over {self.longest} bytes (see $STUBNET_MAX_REPLY_BYTES)")
        return None

    def _undecodable(self, line, e):
        """A line json cannot read (`e` says why): a reply fails its own call, found by its id,
        which the stub writes first ({"cmd":"reply","data":{"id":N,...); other lines end the
        connection. Whether the connection goes on."""
        start = len(_REPLY_HEAD)
        end = line.find(b",", start, start + 21) if line.startswith(_REPLY_HEAD) else -1
        if end < 0 or not line[start:end].isdigit():
            self._end(f"sent a line no stub sends ({type(e).__name__}: {e}; {_head(line)})")
            return False
        if isinstance(e, RecursionError):
            why = "its result is nested too deeply for this Python to decode"
        elif isinstance(e, MemoryError):
            why = f"its result ({len(line)} bytes) is too large for this Python's memory"
        else:
            why = "its result cannot be decoded here"
        message = f"{why} ({type(e).__name__}: {e})" if str(e) else why
        self._answer(int(line[start:end]), {"Err": {"kind": "protocol", "message": message}})
        return True

    def _end(self, why):
        """Ends the connection from the reader: every call waiting, and any made before the next
        connects, fails saying that this port `why`."""
        self.ended = f"127.0.0.1:{self.port} {why}: is it a stub's app port?"
        self.close()

    def _answer(self, id_, result):
        with self.lock:
            slot = self.waiting.pop(id_, None)
        if slot is not None:
            slot[1] = result
            slot[0].set()

    def _dispatch(self, msg):
        data = msg.get("data") or {}
        if msg.get("cmd") == "error":
            print(f"stubnet: error from the client stub: {data.get('message')}", file=sys.stderr)
        elif msg.get("cmd") == "reply":
            self._answer(data.get("id"), data.get("result") or {})
        elif msg.get("cmd") == "refused":  # a server stub's answer to a first frame, no hello
            server = "it answered as a server stub"
            self.ended = f"127.0.0.1:{self.port} is not a stub's app port ({server})"

    def _fail_all(self):
        """The stub is gone: every waiting call fails now, the next call reconnects."""
        with self.lock:
            self.closed = True
            waiting, self.waiting = self.waiting, {}
        for slot in waiting.values():
            slot[1] = _not_connected(self.ended)
            slot[0].set()

    def close(self):
        self._fail_all()  # first: a call writing meanwhile sees self.closed (see request)
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


# What became of a request a call wrote (_Connection._send).
_SENT, _BEGUN, _NOT_SENT, _BEHIND = "sent", "begun", "not sent", "behind"


def _refuse_keys(what, args, kwargs):
    """Raises TypeError naming the first dict in call `what`'s arguments with a key that is not
    a str, as the worker refuses such a result. Each value waits with its trail, (step, the
    trail of its container), made into text only for the error."""
    todo = [(v, (k, None)) for k, v in reversed(kwargs.items())]
    todo += [(v, (i, None)) for i, v in reversed(list(enumerate(args)))]
    while todo:
        value, trail = todo.pop()
        if isinstance(value, dict):
            for key in value:
                if not isinstance(key, str):
                    kind = type(key).__name__
                    where = _trail(trail)
                    raise TypeError(f"{what}: {where} has a key of type {kind}; JSON keys are str")
            todo.extend((v, (k, trail)) for k, v in reversed(value.items()))
        elif isinstance(value, (list, tuple)):
            todo.extend((v, (i, trail)) for i, v in reversed(list(enumerate(value))))


def _trail(trail):
    """A trail (step, trail of the container) as text: args[0]['k'][1], kwargs['name']..."""
    steps = []
    while trail is not None:
        step, trail = trail
        steps.append(step)
    first, rest = steps[-1], reversed(steps[:-1])
    head = f"args[{first}]" if isinstance(first, int) else f"kwargs[{first!r}]"
    return head + "".join(f"[{step!r}]" for step in rest)


# How every line a stub writes begins (serde_json, compact, `cmd` first), and a reply's, to its
# id (common/src/proto.rs pins both). A line longer than _HEAD is read on only if it begins so.
_STUB_LINE = b'{"cmd":"'
_REPLY_HEAD = b'{"cmd":"reply","data":{"id":'
_HEAD = 64 * 1024


def _head(line):
    """How `line` begins, for an error: its first 40 bytes as Python writes bytes."""
    return f"{line[:40]!r}..." if len(line) > 40 else repr(line)


def _not_connected(message):
    return {"Err": {"kind": "not_connected", "message": message}}


def _error(err):
    """The exception to raise for a failed call's error."""
    kind, message = err.get("kind", "protocol"), err.get("message", "")
    exc_type, tb = err.get("exc_type"), err.get("traceback") or ""
    if kind == "timeout":
        return TimeoutError(message)
    cls = getattr(builtins, exc_type or "", None) if kind == "exception" else None
    exc = _builtin(cls, message) if isinstance(cls, type) and issubclass(cls, Exception) else None
    if exc is None:
        return RemoteError(kind, message, exc_type, tb)
    exc.remote_traceback = tb
    if tb and hasattr(exc, "add_note"):
        exc.add_note("remote " + tb.rstrip())
    return exc


def _builtin(cls, message):
    """`cls` carrying the remote message, or None if it cannot be made."""
    if cls is KeyError:
        try:  # str(KeyError('k')) is "'k'": recover the key so str() reads as it did remotely
            return KeyError(ast.literal_eval(message))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return KeyError(message)
    try:
        return cls(message)
    except Exception:
        pass
    try:  # UnicodeDecodeError and the like want more than a message: a subclass that shows it
        shim = type(cls.__name__, (cls,), {"__str__": lambda self: message, "__module__": "builtins"})
        return shim.__new__(shim, message)
    except Exception:
        return None
