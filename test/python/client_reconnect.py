"""Logs, waits for a line on stdin (the test restarts the daemon meanwhile), logs again on the same object.

Usage: client_reconnect.py SOCKET
"""

import json
import sys

from taskhistory import TaskHistory

history = TaskHistory(socket_path=sys.argv[1])
task_id = history.create_task("survives a daemon restart", "autonomous", [])
print(json.dumps({"ready": task_id}), flush=True)
sys.stdin.readline()
seq = history.log_step(task_id, 1, "after restart", "success")
history.complete_task(task_id, "completed")
print(json.dumps({"task_id": task_id, "seq": seq, "task": history.get_task(task_id)}), flush=True)
history.close()
