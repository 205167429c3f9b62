"""A call the daemon does not answer in time: the error says it may have been recorded, and it was.

Usage: client_timeout.py SOCKET DAEMON_PID
Stops the daemon (SIGSTOP) around one log_step with a 0.5 s timeout, lets it go on, and prints
{error_type, is_unavailable, message, task_id, commands}: the step commands get_task then shows.
"""

import json
import os
import signal
import sys
import time

from taskhistory import CallTimeoutError, DaemonUnavailableError, TaskHistory

socket_path, daemon_pid = sys.argv[1], int(sys.argv[2])


def stopped(pid):
    with open("/proc/%d/stat" % pid) as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


with TaskHistory(socket_path=socket_path, timeout=0.5) as history:
    task_id = history.create_task("timed out", "autonomous", [])
    os.kill(daemon_pid, signal.SIGSTOP)
    error = None
    try:
        while not stopped(daemon_pid):
            time.sleep(0.01)
        history.log_step(task_id, 1, "sent while the daemon was stopped", "success")
    except CallTimeoutError as caught:
        error = caught
    finally:
        os.kill(daemon_pid, signal.SIGCONT)
    history.timeout = 10.0
    deadline = time.time() + 10
    commands = []
    while time.time() < deadline and not commands:
        commands = [step["command"] for step in history.get_task(task_id)["steps"]]
        time.sleep(0.05)
    print(json.dumps({
        "error_type": type(error).__name__,
        "is_unavailable": isinstance(error, DaemonUnavailableError),
        "message": str(error),
        "task_id": task_id,
        "commands": commands,
    }))
