import type { Sha256Hex } from './canonical.js';
import { DATA_FILE_FORMAT_V1, type DataFileV1, type DataFileV2 } from './data-file.js';
import { rebuildStepRecord, type DataFileContent } from './data-file-v2.js';
import { LARGE_FIELDS, type ChainRecord, type RecordStub, type StepLoggedRecord } from './records.js';
import type { StepView } from './task-view.js';

export type { DataFileContent };

/**
 * What a parsed data file holds, whatever its format: the kept records with their texts, the stubs
 * of trimmed ones, the tasks. A taskhistory/2 step is rebuilt from its view (the one rule
 * of data-file-v2.ts); nothing is checked here: verify the document for that.
 */
export function dataFileContent(doc: DataFileV1 | DataFileV2, sha256Hex: Sha256Hex): DataFileContent {
  const { machine_id, max_tasks, head, tasks } = doc;
  if (doc.format === DATA_FILE_FORMAT_V1) {
    const { anchor, stubs, records } = (doc as DataFileV1).chain;
    return { machine_id, max_tasks, head, tasks, anchor, stubs, records };
  }
  const { anchor, entries } = (doc as DataFileV2).chain;
  const views = new Map<number, { view: StepView; taskId: string }>();
  for (const task of tasks) for (const view of task.steps) views.set(view.seq, { view, taskId: task.task_id });
  const stubs: RecordStub[] = [];
  const records: ChainRecord[] = [];
  let previous = anchor.hash;
  for (const entry of entries) {
    if (Array.isArray(entry)) {
      const kept = views.get(entry[0]);
      if (kept) records.push(rebuildStepRecord(kept.view, kept.taskId, previous, entry[1], sha256Hex));
      else stubs.push(entry);
      previous = entry[1];
      continue;
    }
    const record = { ...entry } as ChainRecord;
    const view = views.get(record.seq)?.view;
    if (record.type === 'step_logged' && view) for (const field of LARGE_FIELDS) if (view[field] !== undefined) (record as StepLoggedRecord)[field] = view[field];
    records.push(record);
    previous = record.hash;
  }
  return { machine_id, max_tasks, head, tasks, anchor, stubs, records };
}
