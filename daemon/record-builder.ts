import { randomBytes } from 'node:crypto';
import { ErrorCodes, RpcError } from '../protocol/errors.js';
import type { CompleteTaskInput, CreateTaskInput, LogStepInput } from '../protocol/methods.js';
import { truncationMarker } from '../protocol/limits.js';
import { redactValue, type RedactionRule } from '../protocol/redaction.js';
import type { StepLoggedRecord, TaskCompletedRecord, TaskCreatedRecord, UnchainedRecord, Writer } from '../protocol/records.js';

export interface FieldCaps {
  fieldBytes: number;
  descriptionBytes: number;
  commandBytes: number;
  planBytes: number;
}

export interface RedactionSettings {
  enabled: boolean;
  rules: readonly RedactionRule[];
}

/** Unix seconds with microsecond precision, like Python's time.time(). */
export function unixNow(): number {
  return Math.round((performance.timeOrigin + performance.now()) * 1000) / 1e6;
}

/**
 * Turns validated params into record bodies: secrets redacted first (so nothing derived from a
 * secret is ever hashed or stored), then size caps applied (a capped text keeps a marker naming
 * its original length), empty optional texts left out as the original model did. Each record
 * carries its writer, the connection's peer as the kernel named it (none when attribution is off).
 */
export class RecordBuilder {
  constructor(
    public caps: FieldCaps,
    public redaction: RedactionSettings,
    /** The writer of the daemon's own records; undefined when attribution is off. */
    private readonly ownWriter: Writer | undefined,
  ) {}

  taskCreated(params: CreateTaskInput, taskId: string, machineId: string, writer: Writer | undefined): UnchainedRecord {
    const plan = this.redact(params.steps);
    if (Buffer.byteLength(JSON.stringify(plan)) > this.caps.planBytes) {
      throw new RpcError(ErrorCodes.PayloadTooLarge, `steps (the plan) is over ${this.caps.planBytes} bytes`, { field: 'steps', limit: this.caps.planBytes });
    }
    const body: Omit<TaskCreatedRecord, 'seq' | 'prev_hash' | 'hash'> = {
      type: 'task_created',
      ts: unixNow(),
      task_id: taskId,
      description: capText(this.redact(params.description), this.caps.descriptionBytes),
      mode: params.mode,
      plan,
      machine_id: machineId,
    };
    if (params.agent !== undefined) body.agent = this.redact(params.agent);
    if (writer) body.writer = writer;
    return body;
  }

  stepLogged(params: LogStepInput, writer: Writer | undefined): UnchainedRecord {
    const body: Omit<StepLoggedRecord, 'seq' | 'prev_hash' | 'hash'> = {
      type: 'step_logged',
      ts: unixNow(),
      task_id: params.task_id,
      step: params.step_num,
      command: capText(this.redact(params.command), this.caps.commandBytes),
      status: params.status,
    };
    for (const field of ['output', 'error', 'recovery'] as const) {
      const text = params[field];
      if (text) body[field] = capText(this.redact(text), this.caps.fieldBytes);
    }
    if (params.started_at !== undefined) body.started_at = params.started_at;
    if (params.duration_ms !== undefined) body.duration_ms = params.duration_ms;
    if (params.exit_code !== undefined) body.exit_code = params.exit_code;
    if (writer) body.writer = writer;
    return body;
  }

  taskCompleted(params: CompleteTaskInput, writer: Writer | undefined): UnchainedRecord {
    const body: Omit<TaskCompletedRecord, 'seq' | 'prev_hash' | 'hash'> = {
      type: 'task_completed',
      ts: unixNow(),
      task_id: params.task_id,
      final_status: params.final_status,
    };
    if (writer) body.writer = writer;
    return body;
  }

  /** A record the daemon writes itself, signed with its own writer. */
  daemonRecord(body: UnchainedRecord): UnchainedRecord {
    return this.ownWriter ? { ...body, writer: this.ownWriter } : body;
  }

  private redact<T>(value: T): T {
    return this.redaction.enabled ? redactValue(value, this.redaction.rules) : value;
  }
}

/** `task_<unix seconds>_<6 hex digits>`, as the original model named tasks. */
export function newTaskId(): string {
  return `task_${Math.floor(Date.now() / 1000)}_${randomBytes(3).toString('hex')}`;
}

/** Cuts text to at most capBytes of UTF-8 (on a character boundary) and appends the marker. */
export function capText(text: string, capBytes: number): string {
  if (text.length <= capBytes / 3) return text; // fast path: cannot exceed the cap
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= capBytes) return text;
  let end = capBytes;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--; // do not split a UTF-8 sequence
  return bytes.subarray(0, end).toString('utf8') + truncationMarker(bytes.length);
}
