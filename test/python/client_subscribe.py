"""Subscribes (to everything, and to one task), logs two tasks, prints the events each received.

Usage: client_subscribe.py SOCKET
"""

import itertools
import json
import sys

from taskhistory import TaskHistory

with TaskHistory(socket_path=sys.argv[1]) as history:
    everything = history.subscribe(timeout=10)
    watched_id = history.create_task("watched", "autonomous", [{"step": 1}])
    only_watched = history.subscribe(task_id=watched_id, timeout=10)
    other_id = history.create_task("other", "autonomous", [])
    history.log_step(watched_id, 1, "echo one", "success", output="one")
    history.log_step(other_id, 1, "echo two", "failed", error="two")
    history.log_step(watched_id, 2, "echo three", "success")
    history.complete_task(other_id, "failed")
    history.complete_task(watched_id, "completed")
    with everything, only_watched:
        print(json.dumps({
            "watched_id": watched_id,
            "other_id": other_id,
            "everything": list(itertools.islice(everything, 7)),
            "only_watched": list(itertools.islice(only_watched, 3)),
        }))
