"""Independent verifier of a taskhistory chain, written from the rules in protocol/ alone.

Usage: python3 verify_chain.py DATAFILE

Reads DATAFILE (task_history.json, format taskhistory/1 or taskhistory/2) and the journal
segments beside it (task_history.journal.<12-digit first seq>.jsonl), then checks:
  - every record's hash: SHA-256 of the RFC 8785 canonical JSON of the record without
    hash, output, error, recovery and elided;
  - output/error/recovery against their *_sha256 digests, unless elided marks them;
  - seq continuity and prev_hash links from the anchor, through stubs and kept records in seq
    order, to "head", then on through the journal;
  - that "tasks" and "count" are what the kept records describe.
For taskhistory/2 (docs/format-v2.md) the kept step records are rebuilt from their views in
"tasks" and the chain entries' hashes; every problem is collected and the one with the lowest
seq is reported.
Prints {ok, checked, first_bad_seq, reason, head_seq, head_hash, detail} as JSON; exits 0 when
the chain verifies, 1 otherwise.
"""

import decimal
import hashlib
import json
import os
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

GENESIS_HASH = "0" * 64
LARGE_FIELDS = ("output", "error", "recovery")
UNHASHED_FIELDS = frozenset(("hash", "elided") + LARGE_FIELDS)
RECORD_TYPES = frozenset(("task_created", "step_logged", "task_completed", "tamper_detected"))
JOURNAL_NAME = re.compile(r"^task_history\.journal\.\d{12}\.jsonl$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class ChainBroken(Exception):
    def __init__(self, reason: str, seq: Optional[int], detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.seq = seq
        self.detail = detail


# Canonical JSON (RFC 8785)


def canonical_json(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (int, float)):
        return ecmascript_number(value)
    if isinstance(value, str):
        return canonical_string(value)
    if isinstance(value, list):
        return "[" + ",".join(canonical_json(item) for item in value) + "]"
    if isinstance(value, dict):
        keys = sorted(value, key=lambda key: key.encode("utf-16-be", "surrogatepass"))
        return "{" + ",".join(canonical_string(key) + ":" + canonical_json(value[key]) for key in keys) + "}"
    raise TypeError("not a JSON value: %r" % (value,))


def canonical_string(text: str) -> str:
    # json.dumps escapes exactly '"', '\\' and U+0000..U+001F (short forms, else lower-case
    # \u00xx), as JCS does. A lone surrogate (only one can survive json.loads) is escaped too.
    escaped = json.dumps(text, ensure_ascii=False)
    return LONE_SURROGATE.sub(lambda match: "\\u%04x" % ord(match.group()), escaped)


def ecmascript_number(value: Any) -> str:
    """Number::toString of the IEEE-754 double nearest to value."""
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError("NaN and Infinity have no JSON form")
    if number == 0:
        return "0"  # -0 too
    sign = "-" if number < 0 else ""
    digits, point = shortest_digits(abs(number))
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    exponent = point - 1
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return "%s%se%s%d" % (sign, mantissa, "+" if exponent >= 0 else "-", abs(exponent))


def shortest_digits(number: float) -> Tuple[str, int]:
    """(digits, point) with number == 0.<digits> * 10**point, digits the shortest round-trip ones."""
    _, digit_tuple, exponent = decimal.Decimal(repr(number)).as_tuple()
    digits = "".join(map(str, digit_tuple))
    stripped = digits.lstrip("0")
    exponent += len(digits) - len(digits.rstrip("0"))
    stripped = stripped.rstrip("0")
    return stripped, len(stripped) + exponent


def sha256_hex(text: str) -> str:
    # A lone surrogate has no UTF-8 form; like JavaScript, hash it as U+FFFD.
    return hashlib.sha256(LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")).hexdigest()


# Records


def record_hash(record: Dict[str, Any]) -> str:
    covered = {key: value for key, value in record.items() if key not in UNHASHED_FIELDS}
    return sha256_hex(canonical_json(covered))


def content_problem(record: Dict[str, Any]) -> Optional[str]:
    if record_hash(record) != record["hash"]:
        return "hash does not match the record content"
    if record["type"] != "step_logged":
        stray = [field for field in LARGE_FIELDS + ("elided",) if field in record]
        return 'a %s record carries "%s"' % (record["type"], stray[0]) if stray else None
    elided = record.get("elided") or {}
    for field in LARGE_FIELDS:
        if field in elided:
            continue
        text = record.get(field)
        digest = record.get(field + "_sha256")
        if text is None and digest is None:
            continue
        if not isinstance(text, str) or digest != sha256_hex(text):
            return "%s does not match %s_sha256" % (field, field)
    return None


def is_record(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and is_seq(value.get("seq"))
        and isinstance(value.get("hash"), str)
        and isinstance(value.get("prev_hash"), str)
        and isinstance(value.get("ts"), (int, float))
        and not isinstance(value.get("ts"), bool)
        and value.get("type") in RECORD_TYPES
        and (value["type"] == "tamper_detected" or isinstance(value.get("task_id"), str))
    )


def is_seq(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def is_point(value: Any) -> bool:
    return isinstance(value, dict) and is_seq(value.get("seq")) and isinstance(value.get("hash"), str)


# The walk


class Chain:
    """The newest verified point; every record or stub must continue it."""

    def __init__(self, seq: int, hash_: str) -> None:
        self.seq = seq
        self.hash = hash_
        self.anchor_seq = seq
        self.checked = 0

    def add_record(self, record: Dict[str, Any], seqs_still_ahead: List[int]) -> None:
        expected = self.seq + 1
        problem = content_problem(record)
        if problem:
            raise ChainBroken("changed content", expected, "seq %d: %s" % (expected, problem))
        if record["seq"] != expected:
            if record["seq"] > expected and expected not in seqs_still_ahead:
                raise ChainBroken("missing record", expected, "seq %d is missing" % expected)
            raise ChainBroken("reordered records", expected, "seq %d stands where seq %d belongs" % (record["seq"], expected))
        if record["prev_hash"] != self.hash:
            if self.seq == self.anchor_seq:
                raise ChainBroken("bad anchor", expected, "seq %d does not follow the anchor" % expected)
            raise ChainBroken("changed content", self.seq, "seq %d: prev_hash is not the hash of seq %d" % (expected, self.seq))
        self.seq, self.hash = expected, record["hash"]
        self.checked += 1

    def add_stub(self, seq: int, hash_: str, seqs_still_ahead: List[int]) -> None:
        expected = self.seq + 1
        if seq != expected:
            reason = "missing record" if seq > expected and expected not in seqs_still_ahead else "reordered records"
            raise ChainBroken(reason, expected, "stub for seq %d where seq %d belongs" % (seq, expected))
        if not HEX64.match(hash_):
            raise ChainBroken("changed content", seq, "stub for seq %d has no valid hash" % seq)
        self.seq, self.hash = seq, hash_


def walk_checkpoint(doc: Dict[str, Any]) -> Chain:
    anchor = doc["chain"]["anchor"]
    if not HEX64.match(anchor["hash"]) or (anchor["seq"] == 0 and anchor["hash"] != GENESIS_HASH):
        raise ChainBroken("bad anchor", anchor["seq"] + 1, "the anchor is not a valid chain point")
    chain = Chain(anchor["seq"], anchor["hash"])
    stubs = list(doc["chain"]["stubs"])
    records = list(doc["chain"]["records"])
    while stubs or records:
        ahead = [stub[0] for stub in stubs] + [record["seq"] for record in records]
        if stubs and (stubs[0][0] == chain.seq + 1 or not records):
            seq, hash_ = stubs.pop(0)
            chain.add_stub(seq, hash_, ahead[1:])
        else:
            chain.add_record(records.pop(0), ahead)
    head = doc["head"]
    if chain.seq < head["seq"]:
        raise ChainBroken(
            "missing record",
            chain.seq + 1,
            '"head" says seq %d, the chain ends at seq %d' % (head["seq"], chain.seq),
        )
    if (head["seq"], head["hash"]) != (chain.seq, chain.hash):
        raise ChainBroken(
            "changed content",
            min(head["seq"], chain.seq) or None,
            '"head" says seq %d, the chain ends at seq %d' % (head["seq"], chain.seq),
        )
    return chain


def walk_journal(chain: Chain, journal: List[Dict[str, Any]]) -> None:
    newer = [record for record in journal if record["seq"] > chain.seq]  # older ones the checkpoint holds
    for index, record in enumerate(newer):
        chain.add_record(record, [later["seq"] for later in newer[index:]])


# The task view ("tasks", the original model's shape)


def tasks_from_records(records: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    tasks: Dict[str, Dict[str, Any]] = {}
    for record in records:
        kind = record["type"]
        if kind == "task_created":
            task = {
                "task_id": record["task_id"],
                "timestamp": record["ts"],
                "description": record["description"],
                "mode": record["mode"],
                "planned_steps": len(record["plan"]),
                "steps": [],
                "status": "running",
                "machine_id": record["machine_id"],
                "plan": record["plan"],
                "seq": record["seq"],
            }
            if "agent" in record:
                task["agent"] = record["agent"]
            if "writer" in record:
                task["writer"] = record["writer"]
            tasks[record["task_id"]] = task
        elif kind == "step_logged" and record["task_id"] in tasks:
            tasks[record["task_id"]]["steps"].append(step_view_of(record))
        elif kind == "task_completed" and record["task_id"] in tasks:
            tasks[record["task_id"]]["status"] = record["final_status"]
            tasks[record["task_id"]]["completed_at"] = record["ts"]
            tasks[record["task_id"]]["completed_seq"] = record["seq"]
    return list(tasks.values())


def step_view_of(record: Dict[str, Any]) -> Dict[str, Any]:
    step = {"step": record["step"], "command": record["command"], "status": record["status"], "timestamp": record["ts"]}
    for key in LARGE_FIELDS + ("started_at", "duration_ms", "exit_code", "writer"):
        if key in record:
            step[key] = record[key]
    step["seq"] = record["seq"]
    return step


def same_json(a: Any, b: Any) -> bool:
    """Equality of parsed JSON values; unlike ==, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return canonical_json(a) == canonical_json(b)


def check_task_view(doc: Dict[str, Any]) -> None:
    expected = tasks_from_records(doc["chain"]["records"])
    stored = doc["tasks"]
    for index in range(max(len(expected), len(stored))):
        if index >= len(expected):
            raise ChainBroken("changed content", seq_of(stored[index]), '"tasks[%d]" has no records behind it' % index)
        want = expected[index]
        if index >= len(stored):
            raise ChainBroken("missing record", want["seq"], 'task %s is missing from "tasks"' % want["task_id"])
        have = stored[index]
        if same_json(want, have):
            continue
        have_steps = have.get("steps") if isinstance(have, dict) else None
        if isinstance(have_steps, list):
            for position in range(max(len(want["steps"]), len(have_steps))):
                want_step = want["steps"][position] if position < len(want["steps"]) else None
                have_step = have_steps[position] if position < len(have_steps) else None
                if want_step is None or have_step is None or not same_json(want_step, have_step):
                    seq = want_step["seq"] if want_step else seq_of(have_step)
                    raise ChainBroken("changed content", seq, '"tasks[%d].steps[%d]" differs from its record' % (index, position))
        raise ChainBroken("changed content", task_field_seq(doc, want, have), '"tasks[%d]" differs from its records' % index)
    if doc.get("count") != len(stored) or isinstance(doc.get("count"), bool):
        raise ChainBroken("changed content", None, '"count" is %r but "tasks" holds %d' % (doc.get("count"), len(stored)))


def task_field_seq(doc: Dict[str, Any], want: Dict[str, Any], have: Any) -> Optional[int]:
    """The record behind the differing task field: the completion for status/completed_at."""
    if isinstance(have, dict) and all(same_json(want.get(key), have.get(key)) for key in want if key not in ("status", "completed_at", "completed_seq")):
        for record in doc["chain"]["records"]:
            if record["type"] == "task_completed" and record["task_id"] == want["task_id"]:
                return record["seq"]
    return want["seq"]


def seq_of(value: Any) -> Optional[int]:
    seq = value.get("seq") if isinstance(value, dict) else None
    return seq if is_seq(seq) else None


# taskhistory/2

# A step view's "writer" when the step's writer is its task's.
TASK_WRITER = "task"
STEP_VIEW_KEYS = frozenset(("step", "command", "status", "timestamp") + LARGE_FIELDS + ("started_at", "duration_ms", "exit_code", "writer", "seq"))


class Problems:
    """Every problem found; the report names the one with the lowest seq (one without a seq last)."""

    def __init__(self) -> None:
        self.first: Optional[ChainBroken] = None

    def add(self, reason: str, seq: Optional[int], detail: str) -> None:
        if self.first is None or (seq is not None and (self.first.seq is None or seq < self.first.seq)):
            self.first = ChainBroken(reason, seq, detail)


def entry_seq(entry: Any) -> Any:
    return entry[0] if isinstance(entry, list) else entry["seq"]


def rebuilt_step(view: Dict[str, Any], task_id: str, prev_hash: str, hash_: str) -> Dict[str, Any]:
    record = {"type": "step_logged", "ts": view["timestamp"], "task_id": task_id, "step": view["step"],
              "command": view["command"], "status": view["status"]}
    for key in LARGE_FIELDS + ("started_at", "duration_ms", "exit_code", "writer"):
        if key in view:
            record[key] = view[key]
    record["seq"] = view["seq"]
    record["prev_hash"] = prev_hash
    for field in LARGE_FIELDS:
        if field in view:
            record[field + "_sha256"] = sha256_hex(view[field])
    record["hash"] = hash_
    return record


class V2File:
    def __init__(self, doc: Dict[str, Any]) -> None:
        self.doc = doc
        self.problems = Problems()
        self.hashes: Dict[int, str] = {}
        self.kinds: Dict[int, str] = {}
        self.claimed = set()
        self.full_steps: Dict[int, Dict[str, Any]] = {}
        self.kept: List[Dict[str, Any]] = []  # task_created records, in creation order
        self.completions: Dict[str, Dict[str, Any]] = {}
        self.break_at: Optional[int] = None
        self.checked = 0

    def walk_entries(self) -> Chain:
        anchor = self.doc["chain"]["anchor"]
        if not HEX64.match(anchor["hash"]) or (anchor["seq"] == 0 and anchor["hash"] != GENESIS_HASH):
            raise ChainBroken("bad anchor", anchor["seq"] + 1, "the anchor is not a valid chain point")
        self.anchor = anchor
        prev_seq, prev_hash = anchor["seq"], anchor["hash"]
        found_later, found_instead = False, None
        for entry in self.doc["chain"]["entries"]:
            seq = entry_seq(entry)
            expected = prev_seq + 1
            if self.break_at is not None:
                found_later = found_later or seq == self.break_at
                continue
            if seq != expected:
                if isinstance(entry, dict) and record_hash(entry) != entry["hash"]:
                    self.problems.add("changed content", expected, "seq %d: hash does not match the record content" % expected)
                self.break_at, found_instead = expected, seq
                continue
            if isinstance(entry, list):
                if not HEX64.match(entry[1]):
                    self.problems.add("changed content", seq, "the entry for seq %d has no valid hash" % seq)
                self.hashes[seq], self.kinds[seq] = entry[1], "stub"
            else:
                self.full_entry(entry, prev_seq, prev_hash)
            prev_seq, prev_hash = seq, self.hashes[seq]
        head = self.doc["head"]
        if self.break_at is not None:
            reason = "reordered records" if found_later else "missing record"
            self.problems.add(reason, self.break_at, "seq %d is not where it belongs (seq %d is)" % (self.break_at, found_instead))
        elif prev_seq < head["seq"]:
            self.problems.add("missing record", prev_seq + 1, '"head" says seq %d, the chain ends at seq %d' % (head["seq"], prev_seq))
        elif (prev_seq, prev_hash) != (head["seq"], head["hash"]):
            self.problems.add("changed content", min(prev_seq, head["seq"]) or None, '"head" does not match the last entry')
        chain = Chain(anchor["seq"], anchor["hash"])
        chain.seq, chain.hash = head["seq"], head["hash"]
        return chain

    def full_entry(self, record: Dict[str, Any], prev_seq: int, prev_hash: str) -> None:
        seq = record["seq"]
        if any(field in record for field in LARGE_FIELDS):
            self.problems.add("changed content", seq, "the entry for seq %d carries a large field" % seq)
        if record["type"] == "step_logged":
            problem = None if record_hash(record) == record["hash"] else "hash does not match the record content"
        else:
            problem = content_problem(record)
        if problem:
            self.problems.add("changed content", seq, "seq %d: %s" % (seq, problem))
        elif record["prev_hash"] != prev_hash:
            if prev_seq == self.anchor["seq"]:
                self.problems.add("bad anchor", seq, "seq %d does not follow the anchor" % seq)
            else:
                self.problems.add("changed content", prev_seq, "seq %d: prev_hash is not the hash of seq %d" % (seq, prev_seq))
        elif record["type"] != "step_logged":  # a step is counted once, at its view
            self.checked += 1
        self.hashes[seq] = record["hash"]
        self.kinds[seq] = "full_step" if record["type"] == "step_logged" else "full_other"
        if record["type"] == "step_logged":
            self.full_steps[seq] = record
        elif record["type"] == "task_created":
            self.kept.append(record)
        elif record["type"] == "task_completed":
            self.completions[record["task_id"]] = record

    def check_tasks(self) -> None:
        tasks = self.doc["tasks"]
        for position, task in enumerate(tasks):
            want = self.kept[position] if position < len(self.kept) else None
            steps = task.get("steps") if isinstance(task, dict) else None
            if not isinstance(steps, list):
                if want or self.break_at is None:
                    self.problems.add("changed content", want["seq"] if want else None, '"tasks[%d]" is not a task with steps' % position)
                continue
            if want is None:
                # Behind a break in the chain the task's records were not read: the break is reported.
                if self.break_at is None:
                    self.problems.add("changed content", seq_of(task), '"tasks[%d]" has no records behind it' % position)
                task_id = task.get("task_id") if isinstance(task.get("task_id"), str) else ""
            else:
                self.check_head(position, want, task)
                task_id = want["task_id"]
            last_seq = 0
            for view in steps:
                seq = view.get("seq") if isinstance(view, dict) else None
                if not isinstance(seq, int) or isinstance(seq, bool):
                    self.problems.add("changed content", None, "a step view without a valid seq")
                    continue
                if view.get("writer") == TASK_WRITER and isinstance(task.get("writer"), dict):
                    # The step's writer is its task's (checked with the task's head).
                    view = dict(view, writer=task["writer"])
                problem = self.step_problem(view, seq, task_id, last_seq)
                if problem:
                    self.problems.add("changed content", seq, "the step view of seq %d: %s" % (seq, problem))
                else:
                    self.checked += 1
                last_seq = max(last_seq, seq)
        if len(tasks) < len(self.kept):
            want = self.kept[len(tasks)]
            self.problems.add("missing record", want["seq"], 'task %s is missing from "tasks"' % want["task_id"])
        for seq in self.full_steps:
            self.problems.add("missing record", seq, "no step view holds the content of seq %d" % seq)
        count = self.doc.get("count")
        if isinstance(count, bool) or not isinstance(count, (int, float)) or count != len(tasks):
            self.problems.add("changed content", None, '"count" is %r but "tasks" holds %d' % (count, len(tasks)))

    def check_head(self, position: int, created: Dict[str, Any], have: Dict[str, Any]) -> None:
        if content_problem(created) or not isinstance(created.get("plan"), list):
            # A damaged record (already reported) gives no head to compare with.
            self.problems.add("changed content", created["seq"], '"tasks[%d]" has a damaged record behind it' % position)
            return
        want = tasks_from_records([created])[0]
        del want["steps"]
        rest = {key: value for key, value in have.items() if key not in ("steps", "status", "completed_at", "completed_seq")}
        rest["status"] = "running"
        done = self.completions.get(created["task_id"])
        missing = object()
        status, completed_at, completed_seq = (have.get(key, missing) for key in ("status", "completed_at", "completed_seq"))
        if done:
            completion_ok = (status is not missing and same_json(status, done.get("final_status")) and completed_at is not missing
                             and same_json(completed_at, done["ts"]) and completed_seq is not missing and same_json(completed_seq, done["seq"]))
        else:
            # Without a break, a task not completed in the chain must say so; its completion may lie behind a break.
            completion_ok = (status == "running" and completed_at is missing and completed_seq is missing) or self.break_at is not None
        if not same_json(rest, want):
            self.problems.add("changed content", created["seq"], '"tasks[%d]" differs from its records' % position)
        elif not completion_ok:
            self.problems.add("changed content", done["seq"] if done else created["seq"], '"tasks[%d]" differs from its records' % position)

    def step_problem(self, view: Dict[str, Any], seq: int, task_id: str, last_seq: int) -> Optional[str]:
        if seq <= last_seq:
            return "steps are not in seq order"
        if self.break_at is not None and seq >= self.break_at:
            return None  # behind the chain's break, which is reported
        if seq not in self.kinds:
            return "no chain entry has this seq"
        if seq in self.claimed:
            return "another step view has this seq"
        self.claimed.add(seq)
        kind = self.kinds[seq]
        if kind == "full_other":
            return "the chain entry of this seq is not a step"
        extra = [key for key in view if key not in STEP_VIEW_KEYS and not (kind == "full_step" and key == "elided")]
        if extra:
            return 'unexpected key "%s"' % extra[0]
        if any(field in view and not isinstance(view[field], str) for field in LARGE_FIELDS):
            return "a large field is not a string"
        if kind == "full_step":
            entry = self.full_steps.pop(seq)
            record = dict(entry)
            for field in LARGE_FIELDS:
                if field in view:
                    record[field] = view[field]
            if entry["task_id"] != task_id:
                return "its record is of task %s" % entry["task_id"]
            return content_problem(record) or (None if same_json(step_view_of(record), view) else "differs from its record")
        prev_hash = self.anchor["hash"] if seq - 1 == self.anchor["seq"] else self.hashes[seq - 1]
        try:
            rebuilt = rebuilt_step(view, task_id, prev_hash, self.hashes[seq])
        except KeyError as missing_key:
            return "has no %s" % missing_key
        return None if record_hash(rebuilt) == self.hashes[seq] else "does not rebuild the record its chain entry names"


def walk_v2(doc: Dict[str, Any]) -> Chain:
    v2 = V2File(doc)
    chain = v2.walk_entries()
    v2.check_tasks()
    if v2.problems.first:
        raise v2.problems.first
    chain.checked = v2.checked
    return chain


def v2_shape_problem(doc: Dict[str, Any]) -> Optional[str]:
    entries = doc["chain"].get("entries")
    if not isinstance(entries, list):
        return '"chain.entries" is not a list'
    for index, entry in enumerate(entries):
        stub = isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], int) and not isinstance(entry[0], bool) and isinstance(entry[1], str)
        if not stub and not is_record(entry):
            return '"chain.entries[%d]" is neither [seq, hash] nor a record' % index
    return None


# Files


def load_data_file(path: str) -> Dict[str, Any]:
    try:
        with open(path, "rb") as file:
            raw = file.read()
    except OSError as error:
        raise ChainBroken("unreadable file", None, "cannot read %s: %s" % (path, error.strerror))
    if not raw:
        raise ChainBroken("unreadable file", None, "%s is empty" % path)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except ValueError as error:
        raise ChainBroken("unreadable file", None, "%s is not valid JSON (%s)" % (path, error))
    problem = data_file_shape_problem(doc)
    if problem:
        raise ChainBroken("unreadable file", None, "%s: %s" % (path, problem))
    return doc


def data_file_shape_problem(doc: Any) -> Optional[str]:
    if not isinstance(doc, dict):
        return "the top level is not an object"
    if not isinstance(doc.get("tasks"), list):
        return '"tasks" is not a list'
    max_tasks = doc.get("max_tasks")
    if not isinstance(max_tasks, int) or isinstance(max_tasks, bool) or max_tasks < 1:
        return '"max_tasks" is not a positive integer'
    if not isinstance(doc.get("machine_id"), str):
        return '"machine_id" is not a string'
    if not is_point(doc.get("head")):
        return '"head" is not {seq, hash}'
    chain = doc.get("chain")
    if not isinstance(chain, dict) or not is_point(chain.get("anchor")):
        return '"chain.anchor" is not {seq, hash}'
    if doc.get("format") == "taskhistory/2":
        return v2_shape_problem(doc)
    if doc.get("format") != "taskhistory/1":
        return '"format" is neither "taskhistory/2" nor "taskhistory/1"'
    stubs = chain.get("stubs")
    if not isinstance(stubs, list) or not all(
        isinstance(stub, list) and len(stub) == 2 and is_seq(stub[0]) and isinstance(stub[1], str) for stub in stubs
    ):
        return '"chain.stubs" is not a list of [seq, hash]'
    records = chain.get("records")
    if not isinstance(records, list):
        return '"chain.records" is not a list'
    for index, record in enumerate(records):
        if not is_record(record):
            return '"chain.records[%d]" is not a record' % index
    return None


def load_journal(directory: str, checkpoint_seq: int) -> List[Dict[str, Any]]:
    """Records of every segment, oldest first. A segment's lines end at its first NUL byte (the
    zeros after it are preallocated space). Only the newest segment may end in a torn write."""
    names = sorted(name for name in os.listdir(directory) if JOURNAL_NAME.match(name))
    records: List[Dict[str, Any]] = []
    for position, name in enumerate(names):
        try:
            with open(os.path.join(directory, name), "rb") as file:
                text, _, past_end = file.read().partition(b"\0")
        except OSError as error:
            raise ChainBroken("unreadable file", None, "cannot read journal segment %s: %s" % (name, error.strerror))
        lines = text.split(b"\n")
        torn_tail = lines.pop() + past_end.strip(b"\0")  # b"" when the lines end cleanly
        if torn_tail and position != len(names) - 1:
            lines.append(torn_tail)
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line.decode("utf-8"))
            except ValueError:
                record = None
            if not is_record(record):
                last = records[-1]["seq"] if records else checkpoint_seq
                raise ChainBroken("unreadable file", last + 1, "journal segment %s line %d is not a record" % (name, number))
            records.append(record)
    return records


def verify(path: str) -> Dict[str, Any]:
    try:
        doc = load_data_file(path)
        v2 = doc["format"] == "taskhistory/2"
        chain = walk_v2(doc) if v2 else walk_checkpoint(doc)
        walk_journal(chain, load_journal(os.path.dirname(os.path.abspath(path)), chain.seq))
        if not v2:
            check_task_view(doc)
    except ChainBroken as broken:
        return {"ok": False, "checked": 0, "first_bad_seq": broken.seq, "reason": broken.reason,
                "head_seq": None, "head_hash": None, "detail": broken.detail}
    return {"ok": True, "checked": chain.checked, "first_bad_seq": None, "reason": None,
            "head_seq": chain.seq, "head_hash": chain.hash, "detail": None}


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: verify_chain.py DATAFILE\n")
        return 2
    report = verify(argv[1])
    print(json.dumps(report, ensure_ascii=False))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
