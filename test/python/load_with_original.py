"""Loads a task_history.json with the original model's from_dict and prints what it reads back.

Usage: load_with_original.py DATAFILE
"""

import json
import sys

from original_task_history import TaskHistory

with open(sys.argv[1], encoding="utf-8") as file:
    history = TaskHistory.from_dict(json.load(file))

# The loaded history keeps working as the original did.
history.create_task("added after loading", "autonomous", [])

print(json.dumps({
    "max_tasks": history.max_tasks,
    "tasks": [
        {
            "task_id": task["task_id"],
            "status": task["status"],
            "planned_steps": task["planned_steps"],
            "steps": [[step["step"], step["command"], step["status"], step.get("output"), step.get("error")] for step in task["steps"]],
        }
        for task in history.tasks
    ],
    "recent_ids": [task["task_id"] for task in history.get_recent(2)],
    "count_after_adding": history.to_dict()["count"],
}))
