import { createHash } from 'node:crypto';
import { fstatSync, type Stats } from 'node:fs';
import {
  DOCUMENT_END_LINE,
  TASK_END_LINE,
  TASKS_SECTION_LINE,
  entryLine,
  headerLine,
  expandStepView,
  rebuildStepRecord,
  stepViewLine,
  stepViewOf,
  taskHeadLine,
} from '../protocol/data-file-v2.js';
import { recordHash, type ChainPoint, type ChainRecord, type StepLoggedRecord } from '../protocol/records.js';
import type { StepView, TaskView } from '../protocol/task-view.js';
import { DurableFileWriter } from '../node/durable-files.js';
import { log } from '../node/log.js';
import { sha256Hex } from '../node/sha256.js';
import { RecordDamaged, type ChainState, type TaskMeta } from './chain-state.js';
import { OffsetColumn } from './offset-column.js';
import { RecordForm, RecordKind } from './record-index.js';
import { writeTasksSectionIndex } from './tasks-section-index.js';

/** Bytes gathered before one write, at most. */
const CHUNK_BYTES = 256 * 1024;
/**
 * The longest the writer builds a chunk before writing it out, and then it lets every commit staged
 * meanwhile go first: a log_step arriving during a rewrite waits this long at most. (Turning a
 * journal line into an entry and a step view costs tens of µs at 8 KiB outputs: a chunk of them
 * held the event loop for milliseconds, and every step during a rewrite of 50 MB waited 2-5 ms.)
 */
const SLICE_MS = 0.5;
/**
 * Written bytes synced along the way: a sync of the whole file at the end would queue it all on
 * the disk ahead of the journal's fdatasyncs (the commits' p99.9).
 */
const SYNC_EVERY_BYTES = 8 * 1024 * 1024;
/** What frames a copied step view line: the list comma before it (but the first), the newline after. */
const LIST_COMMA = Buffer.from(',');
const NEWLINE = Buffer.from('\n');
const EMPTY = Buffer.alloc(0);

export interface CheckpointHeader {
  machineId: string;
  maxTasks: number;
}

/** A data file written and in place: what it covers and who it is, to tell our writes from others'. */
export interface WrittenCheckpoint {
  fileId: number;
  head: ChainPoint;
  size: number;
  sha256: string;
  ino: number;
  mtimeMs: number;
}

/**
 * Writes task_history.json (format taskhistory/2) from the chain state, streamed in chunks so that
 * commits go on meanwhile: a snapshot of the state at the start (head, anchor, which seqs are kept,
 * each task's head and step count), then every line copied from where it is stored (a step view of
 * the old file as its bytes; a journal line turned into an entry and a step view). Durable and
 * atomic: temp file, fsync, rename, directory fsync. `install` then points the index at the new
 * file. With `repair`, every copied step is checked against its hash first and, if a foreign writer
 * changed it in place, taken from the cache instead (RecordDamaged when the cache has it no more).
 */
export class CheckpointWriter {
  private out: DurableFileWriter | null = null;
  /** The lines gathered for the next write, reused from write to write: no buffer per line. */
  private readonly chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  private chunkBytes = 0;
  private sliceStartedAt = performance.now();
  private syncedBytes = 0;
  private readonly digest = createHash('sha256');
  private readonly newOffsets: OffsetColumn;
  private readonly newLengths: Uint32Array;
  private readonly newForms: Uint8Array;
  readonly head: ChainPoint;
  private readonly anchor: ChainPoint;
  private readonly forms: Uint8Array;
  private readonly tasks: { task: TaskMeta; head: TaskView; steps: number }[];
  /** Where the tasks section starts, and each task head line's bytes: the tasks index's part of the layout. */
  private tasksAt = 0;
  private readonly headBytes: number[] = [];

  constructor(
    private readonly state: ChainState,
    private readonly dataFile: string,
    private readonly header: CheckpointHeader,
    private readonly repair: boolean,
    /** Ends the write early (no temp file left), e.g. when a stop cannot wait for a large log. */
    private readonly signal?: AbortSignal,
  ) {
    this.head = { ...state.head };
    this.anchor = { ...state.anchor };
    this.forms = state.index.formsOf(this.anchor.seq + 1, this.head.seq);
    this.tasks = [...state.tasks.values()].map((task) => ({ task, head: state.taskHead(task, this.head.seq), steps: task.stepSeqs.length }));
    const range = this.head.seq - this.anchor.seq;
    this.newOffsets = OffsetColumn.ofLength(range);
    this.newLengths = new Uint32Array(range);
    this.newForms = new Uint8Array(range);
  }

  /** Writes the file and puts it in place; throws (leaving no temp file) when the disk refuses. */
  async write(): Promise<WrittenCheckpoint> {
    const out = (this.out = await DurableFileWriter.create(this.dataFile));
    try {
      await this.writeLines();
    } catch (error) {
      await out.abort();
      throw error;
    }
    const fd = await out.commit();
    const stats = fstatSync(fd);
    const fileId = this.state.files.add(fd, this.dataFile);
    await this.writeTasksIndex(stats);
    return { fileId, head: this.head, size: stats.size, sha256: this.digest.digest('hex'), ino: stats.ino, mtimeMs: stats.mtimeMs };
  }

  /** The tasks section's layout beside the file, for the next start; without it that start reads the whole file. */
  private async writeTasksIndex(stats: Stats): Promise<void> {
    const tasks = this.tasks.map(({ task, steps }, t) => ({
      createdSeq: task.seq,
      headBytes: this.headBytes[t],
      steps,
      stepSeq: (s: number) => task.stepSeqs.at(s),
      stepLineBytes: (s: number) => this.newLengths[task.stepSeqs.at(s) - this.anchor.seq - 1] + (s === 0 ? 1 : 2),
    }));
    try {
      await writeTasksSectionIndex(this.dataFile, stats, this.head.seq, this.tasksAt, tasks);
    } catch (error) {
      log.warn('could not write the data file\'s tasks index; the next start reads the whole file', { file: this.dataFile, error: (error as NodeJS.ErrnoException).code ?? String(error) });
    }
  }

  /** Points every record still kept at its line in the new file (synchronous: no read sees half of it). */
  install(written: WrittenCheckpoint): void {
    this.state.index.relocateAll(this.anchor.seq + 1, written.fileId, this.newForms, this.newOffsets.array, this.newLengths);
  }

  private async writeLines(): Promise<void> {
    const { anchor, head, state } = this;
    await this.put(headerLine({ machine_id: this.header.machineId, max_tasks: this.header.maxTasks, count: this.tasks.length, head, anchor }));
    for (let seq = anchor.seq + 1; seq <= head.seq; seq++) {
      const first = seq === anchor.seq + 1;
      const form = this.forms[seq - anchor.seq - 1];
      const kind = state.index.kindOf(seq);
      if (form === RecordForm.stub || kind === RecordKind.stepLogged) {
        await this.put(entryLine([seq, state.hashAt(seq) as string], first));
        continue;
      }
      const record = this.repair ? state.record(seq) : (JSON.parse(state.storedLine(seq).toString('utf8')) as ChainRecord);
      await this.putLocated(seq, RecordForm.recordLine, entryLine(record, first), first);
    }
    await this.put(TASKS_SECTION_LINE);
    this.tasksAt = (this.out as DurableFileWriter).position + this.chunkBytes;
    for (const [t, { task, head: taskHead, steps }] of this.tasks.entries()) {
      const headLine = taskHeadLine(taskHead, t === 0);
      this.headBytes[t] = Buffer.byteLength(headLine);
      await this.put(headLine);
      for (let s = 0; s < steps; s++) {
        const seq = task.stepSeqs.at(s);
        if (this.repair || this.forms[seq - this.anchor.seq - 1] !== RecordForm.stepViewLine) {
          await this.putLocated(seq, RecordForm.stepViewLine, stepViewLine(this.stepViewFor(task, seq), s === 0, task.writer), s === 0);
        } else await this.putStoredStepLine(seq, s === 0);
      }
      await this.put(TASK_END_LINE);
    }
    await this.put(DOCUMENT_END_LINE);
    await this.flush();
  }

  /** The step view to write for `seq`: its stored view, checked in repair mode. */
  private stepViewFor(task: TaskMeta, seq: number): StepView {
    const form = this.forms[seq - this.anchor.seq - 1];
    const text = this.state.storedLine(seq).toString('utf8');
    const view = form === RecordForm.stepViewLine ? expandStepView(JSON.parse(text) as StepView, task.writer) : stepViewOf(JSON.parse(text) as StepLoggedRecord);
    if (!this.repair || this.stepMatchesHash(task, seq, view)) return view;
    const cached = this.state.cachedLine(seq, RecordForm.recordLine);
    if (cached !== undefined) return stepViewOf(JSON.parse(cached) as StepLoggedRecord);
    const cachedView = this.state.cachedLine(seq, RecordForm.stepViewLine);
    if (cachedView !== undefined) return expandStepView(JSON.parse(cachedView) as StepView, task.writer);
    throw new RecordDamaged(seq, this.dataFile);
  }

  private stepMatchesHash(task: TaskMeta, seq: number, view: StepView): boolean {
    const hash = this.state.hashAt(seq) as string;
    const record = rebuildStepRecord(view, task.task_id, this.state.hashAt(seq - 1) as string, hash, sha256Hex);
    return recordHash(record, sha256Hex) === hash;
  }

  /** Queues a line whose content (without its leading comma and newline) is where `seq` will be read from. */
  private async putLocated(seq: number, form: 1 | 2, line: string, first: boolean): Promise<void> {
    const bytes = Buffer.byteLength(line);
    await this.reserve(bytes);
    this.locate(seq, form, bytes, first);
    await this.put(line);
  }

  /** Copies the stored step view line of `seq` from its file into the chunk, framed as a list item. */
  private async putStoredStepLine(seq: number, first: boolean): Promise<void> {
    const bytes = this.state.index.lengthOf(seq) + (first ? 1 : 2);
    await this.reserve(bytes);
    this.locate(seq, RecordForm.stepViewLine, bytes, first);
    if (bytes > CHUNK_BYTES) {
      await this.writeOut(Buffer.concat([first ? EMPTY : LIST_COMMA, this.state.storedLine(seq), NEWLINE]));
      return;
    }
    if (!first) this.chunk[this.chunkBytes++] = LIST_COMMA[0];
    this.chunkBytes += this.state.readStoredLine(seq, this.chunk, this.chunkBytes);
    this.chunk[this.chunkBytes++] = NEWLINE[0];
  }

  /** Where the line about to be queued (`bytes` long with its comma and newline) will hold `seq`. */
  private locate(seq: number, form: 1 | 2, bytes: number, first: boolean): void {
    const i = seq - this.anchor.seq - 1;
    this.newOffsets.set(i, (this.out as DurableFileWriter).position + this.chunkBytes + (first ? 0 : 1));
    this.newLengths[i] = bytes - (first ? 1 : 2);
    this.newForms[i] = form;
  }

  private async put(line: string): Promise<void> {
    const bytes = Buffer.byteLength(line);
    await this.reserve(bytes);
    if (bytes > CHUNK_BYTES) await this.writeOut(Buffer.from(line, 'utf8'));
    else this.chunkBytes += this.chunk.write(line, this.chunkBytes, 'utf8');
  }

  /**
   * Makes room for `bytes` in the chunk by writing it out when they do not fit (a larger line is
   * then written on its own), or when this slice of work has taken its time.
   */
  private async reserve(bytes: number): Promise<void> {
    if (this.chunkBytes + bytes > CHUNK_BYTES || performance.now() - this.sliceStartedAt > SLICE_MS) await this.flush();
  }

  private async flush(): Promise<void> {
    if (this.chunkBytes === 0) return;
    await this.writeOut(this.chunk.subarray(0, this.chunkBytes));
    this.chunkBytes = 0;
  }

  private async writeOut(bytes: Buffer): Promise<void> {
    this.signal?.throwIfAborted();
    this.digest.update(bytes);
    const out = this.out as DurableFileWriter;
    await out.write(bytes);
    if (out.position - this.syncedBytes >= SYNC_EVERY_BYTES) {
      this.syncedBytes = out.position;
      await out.syncWritten();
    }
    // The write's completion runs before the group commit's setImmediate of that turn: yield to it.
    await new Promise((resolve) => setImmediate(resolve));
    this.sliceStartedAt = performance.now();
  }
}
