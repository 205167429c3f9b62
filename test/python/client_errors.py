"""Provokes each error a caller can meet; prints {case: [exception class, code, message]}.

Usage: client_errors.py SOCKET MISSING_SOCKET STALE_SOCKET
STALE_SOCKET is bound here and closed without listening: a file nobody answers on.
"""

import json
import socket
import sys

from taskhistory import DaemonUnavailableError, TaskHistory, TaskHistoryError

socket_path, missing_socket, stale_socket = sys.argv[1:4]
outcomes = {}


def attempt(case, action):
    try:
        action()
        outcomes[case] = None
    except TaskHistoryError as error:
        outcomes[case] = [type(error).__name__, error.code, str(error)]


with TaskHistory(socket_path=socket_path) as history:
    task_id = history.create_task("errors", "step-by-step", [])
    history.complete_task(task_id, "aborted")
    attempt("log_step unknown task", lambda: history.log_step("task_0_000000", 1, "x", "success"))
    attempt("complete unknown task", lambda: history.complete_task("task_0_000000", "completed"))
    attempt("get unknown task", lambda: history.get_task("task_0_000000"))
    attempt("complete twice", lambda: history.complete_task(task_id, "completed"))
    attempt("log_step after completion", lambda: history.log_step(task_id, 1, "x", "success"))
    attempt("bad mode", lambda: history.create_task("x", "yolo", []))
    attempt("empty description", lambda: history.create_task("", "autonomous", []))
    attempt("still usable after errors", lambda: history.get_task(task_id))

attempt("no daemon", lambda: TaskHistory(socket_path=missing_socket))
stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
stale.bind(stale_socket)
stale.close()
attempt("stale socket", lambda: TaskHistory(socket_path=stale_socket))
print(json.dumps(outcomes))
