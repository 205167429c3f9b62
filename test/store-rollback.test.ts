import { describe, expect, it } from 'vitest';
import { GroupCommit } from '../daemon/group-commit.js';
import { ErrorCodes } from '../protocol/errors.js';
import { chainRecord, GENESIS_HASH, type ChainRecord } from '../protocol/records.js';
import { sha256Hex } from '../node/sha256.js';
import { FailingJournal } from './failing-journal.js';

/**
 * Group commit's failure path, through a journal twin that always fails (no root, no tmpfs
 * needed; test/disk-full.test.ts fills a real tmpfs): a failed group and every group staged
 * behind it are refused with a StorageFailure naming the directory and the errno, nothing is
 * reported committed, and the owner is told once per failure so that it can unstage.
 */

const DATA_DIR = '/var/lib/taskhistory-test-nowhere';

/** `count` chained tamper records after `from` (the simplest record bodies). */
function records(count: number, from = 0): ChainRecord[] {
  const out: ChainRecord[] = [];
  let head = { seq: from, hash: GENESIS_HASH };
  for (let i = 0; i < count; i++) {
    const record = chainRecord({ type: 'tamper_detected', ts: 1_700_000_000 + i, reason: `test ${i}`, data_file: 'x' }, head.seq, head.hash, sha256Hex);
    out.push(record);
    head = { seq: record.seq, hash: record.hash };
  }
  return out;
}

function groupCommitOn(journal: FailingJournal) {
  const events = { committed: [] as number[][], failed: 0 };
  const commits = new GroupCommit(journal, DATA_DIR, {
    committed: (group) => events.committed.push(group.records.map((record) => record.seq)),
    failed: () => events.failed++,
  });
  return { commits, events };
}

/** Every outcome of the promises: committed, or the error's code, errno and message. */
function settleAll(promises: Promise<void>[]) {
  return Promise.all(promises.map((promise) => promise.then(() => ({ committed: true }), (error) => ({ code: error.code, errno: error.data?.errno, message: error.message as string }))));
}

describe('group commit when the journal cannot be written', () => {
  it('refuses every call of the failed group with a StorageFailure naming the dir and errno, and reports nothing committed', async () => {
    const journal = new FailingJournal();
    const { commits, events } = groupCommitOn(journal);
    const outcomes = await settleAll(records(3).map((record) => commits.add(record)));

    // A group of several writers syncs in the thread pool.
    expect(journal.attempts).toEqual([{ firstSeq: 1, lastSeq: 3, lines: 3, path: 'pool' }]);
    for (const outcome of outcomes) {
      expect(outcome).toMatchObject({ code: ErrorCodes.StorageFailure, errno: 'ENOSPC' });
      expect((outcome as { message: string }).message).toContain(`could not write the journal in ${DATA_DIR} (ENOSPC): nothing was recorded`);
    }
    expect(events).toEqual({ committed: [], failed: 1 });
    expect(commits.storageError).toContain('ENOSPC');
    await commits.drain();
  });

  it('refuses the record of a lone writer, which syncs on this thread, the same way', async () => {
    const journal = new FailingJournal('EDQUOT');
    const { commits, events } = groupCommitOn(journal);
    const [outcome] = await settleAll([commits.add(records(1)[0])]);

    expect(journal.attempts).toEqual([{ firstSeq: 1, lastSeq: 1, lines: 1, path: 'now' }]);
    expect(outcome).toMatchObject({ code: ErrorCodes.StorageFailure, errno: 'EDQUOT' });
    expect(events).toEqual({ committed: [], failed: 1 });
  });

  it('a group staged while the failing one syncs in the thread pool is refused with it and never written', async () => {
    const journal = new FailingJournal('EIO');
    const { commits, events } = groupCommitOn(journal);
    const chain = records(5);
    const syncing = chain.slice(0, 3).map((record) => commits.add(record));
    await new Promise((resolve) => setImmediate(resolve));
    expect(journal.attempts).toEqual([{ firstSeq: 1, lastSeq: 3, lines: 3, path: 'pool' }]);
    const stagedBehind = chain.slice(3).map((record) => commits.add(record));

    const outcomes = await settleAll([...syncing, ...stagedBehind]);
    expect(outcomes).toEqual(outcomes.map(() => expect.objectContaining({ code: ErrorCodes.StorageFailure, errno: 'EIO' })));
    expect(journal.attempts.map((attempt) => attempt.firstSeq)).toEqual([1]);
    expect(events).toEqual({ committed: [], failed: 1 });
    await commits.drain();
  });

  it('drain waits for the failing group to settle', async () => {
    const journal = new FailingJournal();
    const { commits } = groupCommitOn(journal);
    let settled = 0;
    for (const record of records(3)) void commits.add(record).catch(() => settled++);
    await new Promise((resolve) => setImmediate(resolve));
    expect(journal.attempts).toHaveLength(1);
    await commits.drain();
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toBe(3);
  });
});
