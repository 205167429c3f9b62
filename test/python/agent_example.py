"""An agent written against the original TaskHistory model, as existing callers are.

The one-import switch test runs this file as it is (original, in-memory model) and with only the
import line below changed to `from taskhistory import TaskHistory` (the daemon). Everything else
must work unchanged; it prints what it read back, without ids and times, so both runs compare.
"""

import json

from original_task_history import TaskHistory

history = TaskHistory()

plan = [{"step": 1, "command": "ls -la"}, {"step": 2, "command": "cat config.yml"}]
task_id = history.create_task("Inspect the project config", "autonomous", plan)
history.log_step(task_id, 1, "ls -la", "success", output="total 8\nconfig.yml")
history.log_step(task_id, 2, "cat config.yml", "failed", error="Permission denied", recovery="retried with sudo")
history.log_step(task_id, 2, "sudo cat config.yml", "success", output="debug: true")
history.complete_task(task_id, "completed")

aborted_id = history.create_task("Deploy to production", "step-by-step", [{"step": 1, "command": "deploy"}])
history.complete_task(aborted_id, "aborted")

open_id = history.create_task("Watch the logs", "approve-once", [])


def summary(task):
    steps = [
        {key: step[key] for key in ("step", "command", "status", "output", "error", "recovery") if key in step}
        for step in task["steps"]
    ]
    return {
        "id_shape_ok": task["task_id"].startswith("task_") and len(task["task_id"].split("_")[2]) == 6,
        "description": task["description"],
        "mode": task["mode"],
        "planned_steps": task["planned_steps"],
        "status": task["status"],
        "finished": "completed_at" in task,
        "has_machine_id": bool(task["machine_id"]),
        "timestamp_is_number": isinstance(task["timestamp"], (int, float)),
        "steps": steps,
    }


saved = history.to_dict()
print(json.dumps({
    "ids": [task_id, aborted_id, open_id],
    "recent": [summary(task) for task in history.get_recent(2)],
    "all": [summary(task) for task in history.tasks],
    "count": saved["count"],
    "max_tasks": saved["max_tasks"],
    "ids_in_order": [task["task_id"] for task in saved["tasks"]] == [task_id, aborted_id, open_id],
}))
