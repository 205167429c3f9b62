import type { ChainPoint } from '../protocol/records.js';
import { OtherLayout, walkDataFileV2 } from '../node/data-file-lines.js';
import type { ChainState } from './chain-state.js';
import { RecordForm } from './record-index.js';

export interface IndexedDataFile {
  machineId: string;
  head: ChainPoint;
}

/**
 * Builds the chain state's index from a taskhistory/2 data file in the daemon's own line layout,
 * reading each line's place and, for step views, only their seq: no whole-document parse, no
 * hashing (the full verification runs apart). Throws OtherLayout at the first line that does not
 * fit the layout or the chain. With `cacheLines`, keeps every line's text (a small file is held whole).
 */
export function indexDataFile(state: ChainState, fd: number, fileId: number, cacheLines: boolean): IndexedDataFile {
  let taskId: string | null = null;
  let tasksSeen = 0;
  const { head, count, machine_id: machineId } = walkDataFileV2(fd, {
    header: (header) => state.startAfter(header.anchor),
    stub: (seq, hash) => {
      if (seq !== state.head.seq + 1) throw new OtherLayout(`entry for seq ${seq} where ${state.head.seq + 1} was expected`);
      state.appendHash(seq, hash);
    },
    record: (record, line) => {
      if (record.seq !== state.head.seq + 1) throw new OtherLayout(`entry for seq ${record.seq} where ${state.head.seq + 1} was expected`);
      // A step kept whole (it carries `elided`) has its texts in its view: the whole-document path handles it.
      if (record.type === 'step_logged') throw new OtherLayout(`seq ${record.seq} is a step record kept whole`);
      if (record.type === 'task_completed' && !state.tasks.has(record.task_id)) throw new OtherLayout(`seq ${record.seq} completes a task not created before it`);
      state.apply(record, { fileId, offset: line.offset, length: line.length }, cacheLines ? line.text() : undefined);
    },
    taskHead: (head) => {
      if (!state.tasks.has(head.task_id)) throw new OtherLayout(`task ${head.task_id} has no task_created entry`);
      taskId = head.task_id;
      tasksSeen++;
    },
    step: (seq, line) => {
      if (!state.claimStepView(seq, taskId as string, fileId, line.offset, line.length)) throw new OtherLayout(`step seq ${seq} is not a kept step of task ${taskId} in order`);
      if (cacheLines) state.cacheLine(seq, RecordForm.stepViewLine, line.text());
    },
  });
  if (state.head.seq !== head.seq || state.head.hash !== head.hash) throw new OtherLayout(`"head" says seq ${head.seq}, the entries end at seq ${state.head.seq}`);
  if (tasksSeen !== count || tasksSeen !== state.tasks.size) throw new OtherLayout(`"count" is ${count}, the file holds ${tasksSeen} tasks for ${state.tasks.size} created`);
  return { machineId, head: { ...head } };
}
