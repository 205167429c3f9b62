"""Python client for the taskhistory daemon: standard library only, Python 3.9+.

A drop-in replacement for the original in-memory ``TaskHistory`` model: change
``from <old module> import TaskHistory`` to ``from taskhistory import TaskHistory`` and every
task, step and completion goes to the machine's shared, hash-chained log instead.

It speaks JSON-RPC 2.0 as newline-delimited JSON on the daemon's Unix socket: one message per
line each way. Answers are matched by id; ``event`` notifications arriving in between are queued.
"""

import json
import os
import pwd
import select
import socket
import stat
from typing import Any, Dict, Iterator, List, Optional, Tuple

__all__ = [
    "TaskHistory",
    "TaskHistorySnapshot",
    "Subscription",
    "TaskHistoryError",
    "DaemonUnavailableError",
    "UntrustedSocketDirectoryError",
    "check_socket_directory",
    "CallTimeoutError",
    "resolve_socket_path",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "INVALID_PARAMS",
    "INTERNAL_ERROR",
    "TASK_NOT_FOUND",
    "TASK_FINISHED",
    "PAYLOAD_TOO_LARGE",
    "STORAGE_FAILURE",
    "SHUTTING_DOWN",
    "SUBSCRIPTION_NOT_FOUND",
    "CONNECTION_LIMIT",
]

# Error codes, as listed in protocol/errors.ts.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
TASK_NOT_FOUND = 1001
TASK_FINISHED = 1002
PAYLOAD_TOO_LARGE = 1003
STORAGE_FAILURE = 1004
SHUTTING_DOWN = 1005
SUBSCRIPTION_NOT_FOUND = 1006
CONNECTION_LIMIT = 1007

SYSTEM_SOCKET_PATH = "/run/taskhistory/taskhistoryd.sock"
SERVICE_USER = "taskhistory"
EVENT_NOTIFICATION = "event"
_RECV_BYTES = 65536


class TaskHistoryError(Exception):
    """An error answered by the daemon; ``code`` is its JSON-RPC error code (see the constants)."""

    def __init__(self, code: Optional[int], message: str, data: Any = None) -> None:
        super().__init__(message if code is None else "%s (code %d)" % (message, code))
        self.code = code
        self.message = message
        self.data = data


class DaemonUnavailableError(TaskHistoryError):
    """No daemon answered on the socket (missing, refused, closed, or silent past the timeout)."""

    def __init__(self, socket_path: str, problem: str) -> None:
        super().__init__(
            None,
            "taskhistory daemon not available on socket %s: %s. "
            "Start it with `taskhistoryd`, or point TASKHISTORY_SOCKET at its socket." % (socket_path, problem),
        )
        self.socket_path = socket_path


class CallTimeoutError(DaemonUnavailableError):
    """A call was sent but not answered within the timeout: a write may still have been recorded."""

    def __init__(self, socket_path: str, method: str, timeout: float, params: Dict[str, Any]) -> None:
        TaskHistoryError.__init__(
            self,
            None,
            "the daemon on socket %s did not answer %s within %s s%s"
            % (socket_path, method, timeout, _recorded_check_hint(method, params)),
        )
        self.socket_path = socket_path
        self.method = method


def _recorded_check_hint(method: str, params: Dict[str, Any]) -> str:
    """How to find out whether a write that timed out was recorded (as the TypeScript SDK says it)."""
    task_id = params.get("task_id")
    if method in ("log_step", "complete_task") and isinstance(task_id, str):
        return '; it may have been recorded: check with get_task("%s") or `taskhistory show %s` before retrying' % (
            task_id,
            task_id,
        )
    if method == "create_task":
        return "; the task may have been created: check with get_recent() or `taskhistory recent` before retrying"
    return ""


def resolve_socket_path(explicit: Optional[str] = None) -> str:
    """The daemon's socket, by the same rule as protocol/paths.ts resolveSocketPath."""
    if explicit:
        return explicit
    from_env = os.environ.get("TASKHISTORY_SOCKET")
    if from_env:
        return from_env
    uid = os.getuid()
    if uid == 0:
        return SYSTEM_SOCKET_PATH
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return os.path.join(runtime_dir, "taskhistory", "taskhistoryd.sock")
    return "/tmp/taskhistory-%d/taskhistoryd.sock" % uid


class UntrustedSocketDirectoryError(TaskHistoryError):
    """The socket's directory is owned by someone other than root or the caller: not connecting."""

    def __init__(self, directory: str, message: str) -> None:
        super().__init__(None, message)
        self.directory = directory


def check_socket_directory(socket_path: str) -> None:
    """Before sending anything, as node/socket-directory.ts checkSocketDirectory: the socket's directory
    (and the target of a symlinked one) must be owned by root, the caller or the taskhistory service user, and not writable by
    everyone unless sticky; otherwise whoever owns it could be listening in the daemon's place."""
    directory = os.path.dirname(socket_path) or "."
    uid = os.geteuid()
    try:
        found = [os.lstat(directory)]
    except OSError:
        return
    if stat.S_ISLNK(found[0].st_mode):
        try:
            found.append(os.stat(directory))
        except OSError:
            return
    trusted = {0, uid}
    try:
        trusted.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    except KeyError:
        pass
    for entry in found:
        if entry.st_uid not in trusted:
            raise UntrustedSocketDirectoryError(
                directory,
                "not connecting to %s: its directory %s is owned by uid %d, neither root nor you (uid %d) nor the taskhistory service user, "
                "so its owner could be listening in the daemon's place. Remove the directory (as root: rm -r %s) "
                "and restart the daemon, or point TASKHISTORY_SOCKET at a socket in a directory root or you own"
                % (socket_path, directory, entry.st_uid, uid, directory),
            )
        if entry.st_mode & stat.S_IWOTH and not entry.st_mode & stat.S_ISVTX:
            raise UntrustedSocketDirectoryError(
                directory,
                "not connecting to %s: its directory %s is writable by everyone (mode %o), so anyone could "
                "replace the socket. Fix it (chmod o-w %s) or use another socket"
                % (socket_path, directory, stat.S_IMODE(entry.st_mode), directory),
            )


class _LineConnection:
    """One newline-JSON connection: sends requests, returns answers by id, queues notifications."""

    def __init__(self, socket_path: str, timeout: Optional[float]) -> None:
        self.socket_path = socket_path
        self._buffer = bytearray()
        self._notifications: List[Dict[str, Any]] = []
        self._answers: Dict[Any, Dict[str, Any]] = {}
        self._next_id = 1
        check_socket_directory(socket_path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(socket_path)
        except FileNotFoundError:
            self._sock.close()
            raise DaemonUnavailableError(socket_path, "the socket file does not exist")
        except ConnectionRefusedError:
            self._sock.close()
            raise DaemonUnavailableError(socket_path, "connection refused (stale socket, daemon not running)")
        except OSError as error:
            self._sock.close()
            raise DaemonUnavailableError(socket_path, "cannot connect (%s)" % (error.strerror or error))

    def set_timeout(self, timeout: Optional[float]) -> None:
        self._sock.settimeout(timeout)

    def is_open(self) -> bool:
        """False once the daemon has closed its end (EOF is readable without blocking)."""
        if self._sock.fileno() < 0:
            return False
        readable, _, _ = select.select([self._sock], [], [], 0)
        if not readable:
            return True
        try:
            return self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    def send_request(self, method: str, params: Dict[str, Any]) -> Any:
        """Writes one request line and returns its id; raises OSError if the socket is broken."""
        request_id = self._next_id
        self._next_id += 1
        line = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}, allow_nan=False)
        self._sock.sendall(line.encode("utf-8") + b"\n")
        return request_id

    def answer_to(self, request_id: Any) -> Dict[str, Any]:
        """Reads until the answer to ``request_id`` arrives, queueing whatever comes before it."""
        while request_id not in self._answers:
            message = self._read_message()
            if message is None:
                raise DaemonUnavailableError(self.socket_path, "the daemon closed the connection before answering")
            if "id" not in message:
                self._notifications.append(message)
            elif message["id"] is None:
                # The daemon could not read our request at all; it can only be the one in flight.
                return message
            else:
                self._answers[message["id"]] = message
        return self._answers.pop(request_id)

    def next_notification(self) -> Optional[Dict[str, Any]]:
        """The next queued or incoming notification; None once the daemon closed the connection."""
        while not self._notifications:
            message = self._read_message()
            if message is None:
                return None
            if "id" in message:
                self._answers[message["id"]] = message
            else:
                self._notifications.append(message)
        return self._notifications.pop(0)

    def _read_message(self) -> Optional[Dict[str, Any]]:
        while True:
            end = self._buffer.find(b"\n")
            if end != -1:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                if line.strip():
                    return json.loads(line.decode("utf-8"))
                continue
            chunk = self._sock.recv(_RECV_BYTES)
            if not chunk:
                return None
            self._buffer.extend(chunk)

    def close(self) -> None:
        self._sock.close()


def _result_of(answer: Dict[str, Any]) -> Any:
    error = answer.get("error")
    if error is not None:
        raise TaskHistoryError(error.get("code"), error.get("message", "error"), error.get("data"))
    return answer.get("result")


class Subscription:
    """Iterator over ``event`` notifications, in commit order, on a connection of its own.

    Each item is the notification's params: ``{subscription, type, task_id, seq, hash, ts, record}``.
    Iteration ends when the daemon closes the connection; with a ``timeout``, waiting longer than
    that for one event raises TimeoutError.
    """

    def __init__(self, socket_path: str, task_id: Optional[str], timeout: Optional[float], call_timeout: float) -> None:
        self._connection = _LineConnection(socket_path, call_timeout)
        params = {} if task_id is None else {"task_id": task_id}
        try:
            answer = self._connection.answer_to(self._connection.send_request("subscribe", params))
            self.subscription_id = _result_of(answer)["subscription"]
        except socket.timeout:
            self._connection.close()
            raise DaemonUnavailableError(socket_path, "no answer to subscribe within %s s" % call_timeout)
        except BaseException:
            self._connection.close()
            raise
        self._connection.set_timeout(timeout)
        self._timeout = timeout

    def __iter__(self) -> "Subscription":
        return self

    def __next__(self) -> Dict[str, Any]:
        while True:
            try:
                message = self._connection.next_notification()
            except socket.timeout:
                raise TimeoutError(
                    "no event within %s s on socket %s" % (self._timeout, self._connection.socket_path)
                ) from None
            if message is None:
                raise StopIteration
            params = message.get("params")
            if message.get("method") == EVENT_NOTIFICATION and isinstance(params, dict):
                if params.get("subscription") == self.subscription_id:
                    return params

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class TaskHistory:
    """The machine's task history, kept by the taskhistory daemon; the original model's methods.

    ``max_tasks`` is accepted so existing ``TaskHistory(max_tasks=N)`` calls keep working, but the
    daemon's ``--max-tasks`` setting decides; the ``max_tasks`` property reports the daemon's value.
    """

    def __init__(self, socket_path: Optional[str] = None, max_tasks: Optional[int] = None, timeout: float = 10.0) -> None:
        self.socket_path = resolve_socket_path(socket_path)
        self.timeout = timeout
        self._requested_max_tasks = max_tasks
        self._connection: Optional[_LineConnection] = _LineConnection(self.socket_path, timeout)

    # The original model's API.

    def create_task(self, description: str, mode: str, steps: List[Any], agent: Optional[str] = None) -> str:
        """Starts a task with its planned steps; returns its task_id."""
        params: Dict[str, Any] = {"description": description, "mode": mode, "steps": list(steps)}
        if agent is not None:
            params["agent"] = agent
        return self._call("create_task", params)["task_id"]

    def log_step(
        self,
        task_id: str,
        step_num: int,
        command: str,
        status: str,
        output: str = "",
        error: str = "",
        recovery: str = "",
        started_at: Optional[float] = None,
        duration_ms: Optional[float] = None,
        exit_code: Optional[int] = None,
    ) -> int:
        """Records one executed step; returns its seq. Empty texts are left out, as the original did."""
        params: Dict[str, Any] = {"task_id": task_id, "step_num": step_num, "command": command, "status": status}
        optional = {
            "output": output,
            "error": error,
            "recovery": recovery,
            "started_at": started_at,
            "duration_ms": duration_ms,
            "exit_code": exit_code,
        }
        params.update((key, value) for key, value in optional.items() if value is not None and value != "")
        return self._call("log_step", params)["seq"]

    def complete_task(self, task_id: str, final_status: str) -> int:
        """Finishes a task (completed, failed or aborted); returns the record's seq."""
        return self._call("complete_task", {"task_id": task_id, "final_status": final_status})["seq"]

    def get_recent(self, count: int = 10) -> List[Dict[str, Any]]:
        """The newest ``count`` tasks, oldest first."""
        tasks, _ = self._paged("get_recent", {"count": count})
        return tasks

    def to_dict(self) -> Dict[str, Any]:
        """``{tasks, count, max_tasks}``, the original's shape."""
        tasks, last_page = self._paged("to_dict", {})
        return {"tasks": tasks, "count": last_page["count"], "max_tasks": last_page["max_tasks"]}

    @property
    def tasks(self) -> List[Dict[str, Any]]:
        return self.to_dict()["tasks"]

    @property
    def max_tasks(self) -> int:
        return self.to_dict()["max_tasks"]

    @property
    def machine_id(self) -> str:
        return self.status()["machine_id"]

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TaskHistorySnapshot":
        """An offline, read-only view of a ``to_dict`` result or a task_history.json document.

        Unlike the original, this does not load tasks into a live history: the daemon's log is
        append-only, so the snapshot can be read (tasks, get_recent, to_dict) but not written to.
        """
        return TaskHistorySnapshot(data)

    # The daemon's additions.

    def get_task(self, task_id: str) -> Dict[str, Any]:
        tasks, _ = self._paged("get_task", {"task_id": task_id})
        return tasks[0]

    def status(self) -> Dict[str, Any]:
        return self._call("status", {})

    def verify(self) -> Dict[str, Any]:
        """Has the daemon recompute its chain: ``{ok, checked, first_bad_seq, reason, ...}``."""
        return self._call("verify", {})

    def subscribe(self, task_id: Optional[str] = None, timeout: Optional[float] = None) -> Subscription:
        """Events for every new record (or one task's), in commit order, on a second connection."""
        return Subscription(self.socket_path, task_id, timeout, self.timeout)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> "TaskHistory":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def _call(self, method: str, params: Dict[str, Any]) -> Any:
        connection = self._open_connection()
        try:
            try:
                request_id = connection.send_request(method, params)
            except (BrokenPipeError, ConnectionResetError):
                # The daemon dropped us (restart?) and never saw this request: reconnect once, resend.
                self.close()
                connection = self._open_connection()
                request_id = connection.send_request(method, params)
            return _result_of(connection.answer_to(request_id))
        except socket.timeout:
            # The answer may still arrive later; a fresh connection keeps later calls in step.
            self.close()
            raise CallTimeoutError(self.socket_path, method, self.timeout, params)
        except OSError as error:
            self.close()
            raise DaemonUnavailableError(self.socket_path, "connection lost during %s (%s)" % (method, error))

    def _paged(self, method: str, params: Dict[str, Any]) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
        """Reads every page of a paged answer (so none is too large for one line); returns its tasks and the last page.

        A task too large for one page comes in fragments, consecutive entries with the same task_id:
        their steps are joined into one task.
        """
        tasks: List[Dict[str, Any]] = []
        cursor: Optional[str] = None
        while True:
            page = self._call(method, dict(params, cursor=cursor))
            for fragment in page["tasks"]:
                if tasks and tasks[-1]["task_id"] == fragment["task_id"]:
                    tasks[-1]["steps"].extend(fragment["steps"])
                else:
                    tasks.append(fragment)
            cursor = page["next_cursor"]
            if cursor is None:
                return tasks, page

    def _open_connection(self) -> _LineConnection:
        """The current connection, replaced once if the daemon has closed it since the last call."""
        if self._connection is not None and not self._connection.is_open():
            self.close()
        if self._connection is None:
            self._connection = _LineConnection(self.socket_path, self.timeout)
        return self._connection


class TaskHistorySnapshot:
    """What ``TaskHistory.from_dict`` returns: the tasks of a saved document, read-only, no daemon."""

    def __init__(self, data: Dict[str, Any]) -> None:
        self.tasks: List[Dict[str, Any]] = list(data.get("tasks", []))
        self.max_tasks: int = data.get("max_tasks", 100)

    def get_recent(self, count: int = 10) -> List[Dict[str, Any]]:
        return self.tasks[-count:] if count > 0 else []

    def get_task(self, task_id: str) -> Dict[str, Any]:
        for task in self.tasks:
            if task.get("task_id") == task_id:
                return task
        raise TaskHistoryError(TASK_NOT_FOUND, "Task not found: %s is not in this snapshot" % task_id)

    def to_dict(self) -> Dict[str, Any]:
        return {"tasks": self.tasks, "count": len(self.tasks), "max_tasks": self.max_tasks}

    def create_task(self, *args: Any, **kwargs: Any) -> str:
        raise self._read_only("create_task")

    def log_step(self, *args: Any, **kwargs: Any) -> int:
        raise self._read_only("log_step")

    def complete_task(self, *args: Any, **kwargs: Any) -> int:
        raise self._read_only("complete_task")

    @staticmethod
    def _read_only(method: str) -> TaskHistoryError:
        return TaskHistoryError(
            None, "%s on a snapshot from TaskHistory.from_dict: snapshots are read-only; log through TaskHistory()" % method
        )
