import type { Stats } from 'node:fs';
import { crc32 } from 'node:zlib';
import { DurableFileWriter, readRegularFileSync } from '../node/durable-files.js';

/**
 * `task_history.json.tasks-index`: the layout of a checkpoint's tasks section (each task's created
 * seq and head line's bytes, then each of its steps' seq and line's bytes), written beside the
 * checkpoint right after it. The tasks section is nearly all of a large data file (every kept
 * step's texts); with this a start reads only the entries before it, so start-up does not grow with
 * the bytes of the steps' outputs. 8 bytes a step (16 past 4 GiB or 4 billion seqs): under 1 % of
 * the file at 1 KiB outputs.
 *
 * Only a cache: a start ignores one that is not about exactly this data file (inode, size, mtime),
 * is torn (CRC-32) or does not add up to the file's size, and walks the file instead. The full
 * verification in the background still reads every line.
 *
 * Layout: numbers (uint32, or float64 when the file or a seq is past 32 bits) in the machine's byte
 * order (the file never leaves it), per task
 * `createdSeq, headBytes, steps, (seq, lineBytes) x steps`; then a JSON trailer, its byte length
 * (u32), the CRC-32 of everything before it (u32) and the magic.
 */
const TASKS_INDEX_SUFFIX = '.tasks-index';
const MAGIC = Buffer.from('THTASKS1', 'latin1');
const FORMAT = 'taskhistory-tasks-index/1';
const TAIL_BYTES = 4 + 4 + MAGIC.length;
/** Numbers gathered before one write. */
const BATCH_NUMBERS = 8192;
const UINT32_MAX = 0xffffffff;

interface Trailer {
  format: string;
  data_file: { ino: number; size: number; mtime_ms: number };
  /** Where the tasks section's first line starts. */
  tasks_at: number;
  numbers: number;
  /** Bytes a number. */
  width: 4 | 8;
}

/** One task of the section, as the writer knows it. */
export interface SectionTask {
  createdSeq: number;
  headBytes: number;
  steps: number;
  /** The seq of its step `s`, and that line's bytes (list comma and newline included). */
  stepSeq(s: number): number;
  stepLineBytes(s: number): number;
}

/** The section as read back: per task its created seq, head line bytes and steps. */
export interface TasksSectionIndex {
  tasksAt: number;
  tasks: { createdSeq: number; headBytes: number; steps: Uint32Array | Float64Array }[];
}

function tasksIndexPath(dataFile: string): string {
  return `${dataFile}${TASKS_INDEX_SUFFIX}`;
}

/** Writes the index of a data file just put in place (`identity`: its fstat; `lastSeq` its head), atomically. */
export async function writeTasksSectionIndex(dataFile: string, identity: Stats, lastSeq: number, tasksAt: number, tasks: SectionTask[]): Promise<void> {
  // Every number is a seq, a count or a size within the file.
  const width = identity.size > UINT32_MAX || lastSeq > UINT32_MAX ? 8 : 4;
  const out = await DurableFileWriter.create(tasksIndexPath(dataFile));
  try {
    let crc = 0;
    const put = async (bytes: Buffer) => {
      crc = crc32(bytes, crc);
      await out.write(bytes);
    };
    // One batch, reused (each write is awaited before it is filled again); synchronous but for a
    // write per full batch: an await per number cost a microtask each, on the event loop.
    const batch = width === 8 ? new Float64Array(BATCH_NUMBERS) : new Uint32Array(BATCH_NUMBERS);
    let batched = 0;
    let numbers = 0;
    const flush = async () => {
      await put(Buffer.from(batch.buffer, 0, batched * width));
      batched = 0;
    };
    // Room for a task's three numbers or a step's two before the batch is written.
    const full = () => batched > BATCH_NUMBERS - 3;
    for (const task of tasks) {
      batch[batched++] = task.createdSeq;
      batch[batched++] = task.headBytes;
      batch[batched++] = task.steps;
      numbers += 3 + 2 * task.steps;
      for (let s = 0; s < task.steps; s++) {
        if (full()) await flush();
        batch[batched++] = task.stepSeq(s);
        batch[batched++] = task.stepLineBytes(s);
      }
      if (full()) await flush();
    }
    if (batched > 0) await flush();
    const trailer: Trailer = { format: FORMAT, data_file: { ino: identity.ino, size: identity.size, mtime_ms: identity.mtimeMs }, tasks_at: tasksAt, numbers, width };
    const json = Buffer.from(JSON.stringify(trailer), 'utf8');
    await put(json);
    const tail = Buffer.alloc(TAIL_BYTES);
    tail.writeUInt32LE(json.length, 0);
    tail.writeUInt32LE(crc, 4);
    MAGIC.copy(tail, 8);
    await out.write(tail);
  } catch (error) {
    await out.abort();
    throw error;
  }
  // Not synced: a torn or lost index fails its CRC or is missing, and the next start walks the file.
  await out.replace();
}

/** The index of the data file `dataStats` describes, or null when none fits it exactly. */
export function readTasksSectionIndex(dataFile: string, dataStats: Stats): TasksSectionIndex | null {
  let bytes: Buffer;
  try {
    bytes = readRegularFileSync(tasksIndexPath(dataFile));
  } catch {
    // None, or unreadable: the start walks the file.
    return null;
  }
  return decode(bytes, dataStats);
}

function decode(bytes: Buffer, dataStats: Stats): TasksSectionIndex | null {
  const tailAt = bytes.length - TAIL_BYTES;
  if (tailAt < 0 || !bytes.subarray(tailAt + 8).equals(MAGIC)) return null;
  const jsonAt = tailAt - bytes.readUInt32LE(tailAt);
  if (jsonAt < 0 || crc32(bytes.subarray(0, tailAt)) !== bytes.readUInt32LE(tailAt + 4)) return null;
  let trailer: Trailer;
  try {
    trailer = JSON.parse(bytes.toString('utf8', jsonAt, tailAt)) as Trailer;
  } catch {
    return null;
  }
  const file = trailer.data_file;
  if (trailer.format !== FORMAT || file?.ino !== dataStats.ino || file.size !== dataStats.size || file.mtime_ms !== dataStats.mtimeMs) return null;
  const { width } = trailer;
  if ((width !== 4 && width !== 8) || !Number.isSafeInteger(trailer.numbers) || trailer.numbers * width !== jsonAt || !Number.isSafeInteger(trailer.tasks_at)) return null;
  // A typed array needs its memory aligned: a view when it is (a file's read buffer is), else a copy.
  const aligned = bytes.byteOffset % 8 === 0;
  const memory = aligned ? bytes.buffer : (bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + jsonAt) as ArrayBuffer);
  const at = aligned ? bytes.byteOffset : 0;
  const numbers = width === 8 ? new Float64Array(memory, at, trailer.numbers) : new Uint32Array(memory, at, trailer.numbers);
  const tasks: TasksSectionIndex['tasks'] = [];
  for (let i = 0; i < numbers.length; ) {
    const steps = numbers[i + 2];
    if (!Number.isSafeInteger(steps) || steps < 0 || i + 3 + 2 * steps > numbers.length) return null;
    tasks.push({ createdSeq: numbers[i], headBytes: numbers[i + 1], steps: numbers.subarray(i + 3, i + 3 + 2 * steps) });
    i += 3 + 2 * steps;
  }
  return { tasksAt: trailer.tasks_at, tasks };
}
