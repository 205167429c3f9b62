"""Reads a log larger than one message through the Python client; prints what it assembled as JSON.

Usage: client_paging.py SOCKET TASK_ID
"""

import json
import sys

from taskhistory import TaskHistory

with TaskHistory(socket_path=sys.argv[1]) as history:
    print(json.dumps({
        "dict": history.to_dict(),
        "recent": history.get_recent(3),
        "task": history.get_task(sys.argv[2]),
    }, ensure_ascii=False))
