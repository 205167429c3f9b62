/** One connection's share of the daemon's buffers. */
export interface BufferHolder {
  readonly heldBytes: number;
  /** Closes the connection saying why, and leaves the budget. */
  cutOff(reason: string, cause: 'behind' | 'overloaded' | 'timeout'): void;
}

/**
 * The bound on bytes held for all connections together: unfinished input lines and frames, and
 * answers and events not yet taken by the kernel. Past it, the connection holding the most is cut
 * off, so one greedy or stalled client cannot take the memory every other client needs.
 */
export class BufferBudget {
  private total = 0;
  private readonly holders = new Set<BufferHolder>();
  private relieving = false;

  constructor(readonly maxBytes: number) {}

  get heldBytes(): number {
    return this.total;
  }

  join(holder: BufferHolder): void {
    this.holders.add(holder);
  }

  leave(holder: BufferHolder): void {
    this.holders.delete(holder);
  }

  change(deltaBytes: number): void {
    this.total += deltaBytes;
    if (this.total > this.maxBytes && !this.relieving) this.relieve();
  }

  private relieve(): void {
    this.relieving = true;
    try {
      while (this.total > this.maxBytes && this.holders.size > 0) {
        let biggest: BufferHolder | null = null;
        for (const holder of this.holders) if (!biggest || holder.heldBytes > biggest.heldBytes) biggest = holder;
        if (!biggest) break;
        this.holders.delete(biggest);
        biggest.cutOff(`the daemon holds ${this.total} bytes for all its connections (limit ${this.maxBytes}) and this connection held the most, ${biggest.heldBytes}`, 'overloaded');
      }
    } finally {
      this.relieving = false;
    }
  }
}
