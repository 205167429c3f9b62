import { lstatSync, readFileSync, renameSync, statSync } from 'node:fs';
import type { FSWatcher } from 'chokidar';
import { sha256Hex } from '../node/sha256.js';
import { ChainBreak, parseDataFile, verifyDataFile } from '../protocol/chain-verify.js';
import { evidenceFileName } from '../protocol/data-file.js';
import { fileIdentity } from '../node/durable-files.js';
import type { TamperDetectedRecord } from '../protocol/records.js';
import { log } from '../node/log.js';
import type { Checkpointer } from './checkpointer.js';
import type { Journal, SegmentDamage } from './journal.js';
import type { Lifecycle } from './lifecycle.js';
import { unixNow } from './record-builder.js';
import type { TaskStore } from './store.js';

/** Quiet time after the last event, and between two looks, before the file is judged: writers work in steps. */
const SETTLE_MS = 50;
/** A file still changing after this many looks is judged as it is then. */
const MAX_SETTLE_LOOKS = 10;
/** How often the journal segments are looked at (a stat each): damage is found well within 2 s. */
const JOURNAL_LOOK_MS = 500;

export interface TamperWatchOptions {
  store: Pick<TaskStore, 'appendDaemonRecord' | 'checkpoint' | 'hashAt'>;
  checkpointer: Pick<Checkpointer, 'withDiskLock' | 'isOwnWrite' | 'isOwnContent' | 'checkpointSeq'>;
  journal: Pick<Journal, 'inspectSegments' | 'abandon'>;
  dataFile: string;
}

type TamperFinding = Omit<TamperDetectedRecord, 'seq' | 'prev_hash' | 'hash' | 'ts' | 'type'>;

export interface TamperEvent {
  seq: number;
  ts: number;
  reason: string;
  evidence_file?: string;
}

/**
 * Watches task_history.json and the journal segments for changes the daemon did not make. The
 * daemon's own state is the truth: a foreign version of the data file that is not the daemon's
 * chain is moved aside as evidence (`task_history.json.tampered-<time>`), a `tamper_detected`
 * record is appended, and the good file is written again. A deleted file is written again the
 * same way. A journal segment deleted, replaced, written to or planted is handled alike: moved
 * aside when it is still there, recorded, and every record written again from memory (a forced
 * checkpoint), so that nothing acknowledged depends on it.
 *
 * Only the data file is watched with events, not its directory, where every journal append would
 * wake the watcher; the segments are looked at with a stat each on a timer. Events only trigger a
 * trailing, serialized re-read: chokidar's throttling can drop the last event of a burst, and the
 * re-read on `ready` covers changes made before the watcher was up.
 */
export class TamperWatch implements Lifecycle {
  private watcher: FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;
  private journalTimer: NodeJS.Timeout | null = null;
  private checking = false;
  private recheck = false;
  count = 0;
  last: TamperEvent | null = null;
  private readonly dataFile: string;

  constructor(private readonly options: TamperWatchOptions) {
    this.dataFile = options.dataFile;
  }

  /** Loads chokidar only now, after the socket serves: it is not on the start-up path. */
  async start(): Promise<void> {
    const { watch } = await import('chokidar');
    this.watcher = watch(this.dataFile, { ignoreInitial: true });
    this.watcher.on('all', () => this.schedule());
    this.watcher.on('ready', () => this.schedule());
    this.watcher.on('error', (error) => log.warn('file watcher error', { file: this.dataFile, error: String(error) }));
    this.journalTimer = setInterval(() => void this.checkJournal(), JOURNAL_LOOK_MS);
  }

  async stop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    if (this.journalTimer) clearInterval(this.journalTimer);
    await this.watcher?.close();
  }

  /**
   * Finds damaged segments and, in the same turn (nothing is appended or deleted meanwhile),
   * moves what is left of them aside and stops the journal relying on them; then records each
   * and writes every record again.
   */
  private async checkJournal(): Promise<void> {
    let findings: TamperFinding[];
    try {
      const damages = this.options.journal.inspectSegments();
      if (damages.length === 0) return;
      findings = damages.map((damage) => this.setAside(damage));
      this.options.journal.abandon(damages);
    } catch (error) {
      log.error('could not look at the journal segments', { file: this.dataFile, error: String(error) });
      return;
    }
    for (const found of findings) {
      try {
        await this.record(found, 'a journal segment was changed by someone else; every record was written again from memory');
      } catch (error) {
        log.error('could not record damage to the journal', { file: found.data_file, error: String(error) });
      }
    }
  }

  private setAside(damage: SegmentDamage): TamperFinding {
    const found: TamperFinding = { reason: `journal segment ${damage.name} ${damage.problem === 'planted' ? 'planted by someone else' : damage.problem}`, data_file: damage.path, first_bad_seq: damage.firstSeq };
    if (damage.problem === 'deleted') return found;
    const evidence = evidenceFileName(damage.path, new Date());
    renameSync(damage.path, evidence);
    const stats = lstatSync(evidence);
    return { ...found, evidence_file: evidence, ...(stats.isFile() && { evidence_sha256: sha256Hex(readFileSync(evidence, 'utf8')) }) };
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.check(), SETTLE_MS);
  }

  private async check(): Promise<void> {
    if (this.checking) {
      this.recheck = true;
      return;
    }
    this.checking = true;
    try {
      const settled = await this.settledIdentity();
      const found = await this.options.checkpointer.withDiskLock(async () => this.inspect(settled));
      if (found) await this.record(found, 'tamper detected: the data file was changed by someone else; kept the daemon\'s chain and rewrote the file');
    } catch (error) {
      log.error('could not handle a change of the data file', { file: this.dataFile, error: String(error) });
    } finally {
      this.checking = false;
      if (this.recheck) {
        this.recheck = false;
        this.schedule();
      }
    }
  }

  /**
   * The file's identity (inode, size, mtime; null when missing) once two looks SETTLE_MS apart
   * agree: a foreign writer may truncate and rewrite in steps, and judging a half-written file
   * would record the wrong damage.
   */
  private async settledIdentity(): Promise<string | null> {
    let previous = fileIdentity(this.dataFile);
    for (let look = 0; look < MAX_SETTLE_LOOKS; look++) {
      await new Promise((resolve) => setTimeout(resolve, SETTLE_MS));
      const current = fileIdentity(this.dataFile);
      if (current === previous) return current;
      previous = current;
    }
    return previous;
  }

  /** Under the disk lock: is the file ours? If not, move it aside. Returns what to record. */
  private inspect(settled: string | null): TamperFinding | null {
    if (fileIdentity(this.dataFile) !== settled) {
      this.recheck = true; // changed again meanwhile (perhaps by our own checkpoint): look once more
      return null;
    }
    if (settled === null) return { reason: 'data file deleted', data_file: this.dataFile };
    if (this.options.checkpointer.isOwnWrite(statSync(this.dataFile))) return null;
    const text = readFileSync(this.dataFile, 'utf8');
    if (this.options.checkpointer.isOwnContent(text)) return null;
    const problem = this.differenceFromOwnChain(text);
    if (!problem) {
      log.info('the data file was rewritten by someone else but still holds this daemon\'s chain', { file: this.dataFile });
      return null;
    }
    const evidence = evidenceFileName(this.dataFile, new Date());
    renameSync(this.dataFile, evidence);
    const evidenceSha256 = sha256Hex(readFileSync(evidence, 'utf8'));
    return { reason: problem.reason, data_file: this.dataFile, evidence_file: evidence, evidence_sha256: evidenceSha256, first_bad_seq: problem.seq };
  }

  /** Null when the text verifies and ends at the daemon's own checkpoint; else what is wrong. */
  private differenceFromOwnChain(text: string): { reason: string; seq: number | null } | null {
    try {
      const doc = parseDataFile(text);
      verifyDataFile(doc, sha256Hex);
      const { checkpointSeq } = this.options.checkpointer;
      if (doc.head.seq === checkpointSeq && this.options.store.hashAt(doc.head.seq) === doc.head.hash) return null;
      return { reason: `not this daemon's chain (file head seq ${doc.head.seq}, daemon checkpoint seq ${checkpointSeq})`, seq: doc.head.seq };
    } catch (error) {
      if (!(error instanceof ChainBreak)) throw error;
      return { reason: `${error.reason}: ${error.message}`, seq: error.seq };
    }
  }

  private async record(found: TamperFinding, message: string): Promise<void> {
    const ts = unixNow();
    const seq = await this.options.store.appendDaemonRecord({ type: 'tamper_detected', ts, ...found });
    // Counted as soon as the record is committed: status must agree with the event subscribers saw.
    this.count++;
    this.last = { seq, ts, reason: found.reason, ...(found.evidence_file && { evidence_file: found.evidence_file }) };
    await this.options.store.checkpoint(true);
    log.error(message, {
      file: found.data_file,
      reason: found.reason,
      evidence: found.evidence_file,
      first_bad_seq: found.first_bad_seq ?? undefined,
      seq,
    });
  }
}
