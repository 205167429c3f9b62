"""Runs one whole task through the Python client; prints what each call returned as JSON.

Usage: client_whole_task.py SOCKET
"""

import json
import sys

from taskhistory import TaskHistory

plan = [{"step": 1, "command": "make build"}, {"step": 2, "command": "make test"}, {"step": 3, "command": "make install"}]

with TaskHistory(socket_path=sys.argv[1]) as history:
    task_id = history.create_task("Build, test and install", "approve-once", plan, agent="python-test")
    seqs = [
        history.log_step(task_id, 1, "make build", "success", output="built ✓", started_at=1700000000.25, duration_ms=1234.5, exit_code=0),
        history.log_step(task_id, 2, "make test", "failed", output="", error="2 tests failed", recovery="re-ran with -j1", exit_code=2),
        history.log_step(task_id, 3, "make install", "success"),
    ]
    running = history.get_task(task_id)
    seqs.append(history.complete_task(task_id, "completed"))
    print(json.dumps({
        "task_id": task_id,
        "seqs": seqs,
        "running_status": running["status"],
        "task": history.get_task(task_id),
        "recent": history.get_recent(5),
        "recent_one": history.get_recent(1),
        "dict": history.to_dict(),
        "tasks_property": history.tasks,
        "max_tasks_property": history.max_tasks,
        "machine_id_property": history.machine_id,
        "status": history.status(),
        "verify": history.verify(),
    }))
