"""Independent verifier of a taskhistory chain, written from the rules in protocol/ alone.

Usage: python3 verify_chain.py DATAFILE

Reads DATAFILE (task_history.json) and the journal segments beside it
(task_history.journal.<12-digit first seq>.jsonl), then checks:
  - every record's hash: SHA-256 of the RFC 8785 canonical JSON of the record without
    hash, output, error, recovery and elided;
  - output/error/recovery against their *_sha256 digests, unless elided marks them;
  - seq continuity and prev_hash links from the anchor, through stubs and kept records in seq
    order, to "head", then on through the journal;
  - that "tasks" and "count" are what the kept records describe.
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
            tasks[record["task_id"]] = task
        elif kind == "step_logged" and record["task_id"] in tasks:
            step = {"step": record["step"], "command": record["command"], "status": record["status"], "timestamp": record["ts"]}
            for key in LARGE_FIELDS + ("started_at", "duration_ms", "exit_code"):
                if key in record:
                    step[key] = record[key]
            step["seq"] = record["seq"]
            tasks[record["task_id"]]["steps"].append(step)
        elif kind == "task_completed" and record["task_id"] in tasks:
            tasks[record["task_id"]]["status"] = record["final_status"]
            tasks[record["task_id"]]["completed_at"] = record["ts"]
            tasks[record["task_id"]]["completed_seq"] = record["seq"]
    return list(tasks.values())


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
    if not is_point(doc.get("head")):
        return '"head" is not {seq, hash}'
    chain = doc.get("chain")
    if not isinstance(chain, dict) or not is_point(chain.get("anchor")):
        return '"chain.anchor" is not {seq, hash}'
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
        chain = walk_checkpoint(doc)
        walk_journal(chain, load_journal(os.path.dirname(os.path.abspath(path)), chain.seq))
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
