"""A re-creation of the original in-memory ``TaskHistory`` model, as issue 2 describes it.

The compatibility yardstick: the daemon's task_history.json must load with ``from_dict`` (keys
``tasks`` and ``max_tasks``), and an agent written against this API must run unchanged on
``from taskhistory import TaskHistory``. Its quirks are kept on purpose: an unknown task_id is
silently ignored, empty output/error/recovery keys are left out, at most ``max_tasks`` tasks.
"""

import hashlib
import secrets
import socket
import time
from typing import Any, Dict, List, Optional


def _machine_id() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8")).hexdigest()[:16]


class TaskHistory:
    def __init__(self, max_tasks: int = 100, machine_id: Optional[str] = None) -> None:
        self.tasks: List[Dict[str, Any]] = []
        self.max_tasks = max_tasks
        self.machine_id = machine_id or _machine_id()

    def create_task(self, description: str, mode: str, steps: List[Any]) -> str:
        task_id = "task_%d_%s" % (int(time.time()), secrets.token_hex(3))
        self.tasks.append(
            {
                "task_id": task_id,
                "timestamp": time.time(),
                "description": description,
                "mode": mode,
                "planned_steps": len(steps),
                "steps": [],
                "status": "running",
                "machine_id": self.machine_id,
            }
        )
        if len(self.tasks) > self.max_tasks:
            self.tasks = self.tasks[-self.max_tasks :]
        return task_id

    def log_step(
        self,
        task_id: str,
        step_num: int,
        command: str,
        status: str,
        output: str = "",
        error: str = "",
        recovery: str = "",
    ) -> None:
        for task in self.tasks:
            if task["task_id"] == task_id:
                step: Dict[str, Any] = {"step": step_num, "command": command, "status": status, "timestamp": time.time()}
                if output:
                    step["output"] = output
                if error:
                    step["error"] = error
                if recovery:
                    step["recovery"] = recovery
                task["steps"].append(step)
                return

    def complete_task(self, task_id: str, final_status: str) -> None:
        for task in self.tasks:
            if task["task_id"] == task_id:
                task["status"] = final_status
                task["completed_at"] = time.time()
                return

    def get_recent(self, count: int = 10) -> List[Dict[str, Any]]:
        return self.tasks[-count:]

    def to_dict(self) -> Dict[str, Any]:
        return {"tasks": self.tasks, "count": len(self.tasks), "max_tasks": self.max_tasks}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TaskHistory":
        history = cls(max_tasks=data.get("max_tasks", 100))
        history.tasks = data.get("tasks", [])
        return history
