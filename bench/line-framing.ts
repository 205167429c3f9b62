import type { Socket } from 'node:net';

/** Calls `onLine` with each non-empty `\n`-terminated line the socket receives (the bench's newline framing). */
export function onLines(socket: Socket, onLine: (line: string) => void): void {
  let buffered = '';
  socket.on('data', (chunk: Buffer) => {
    buffered += chunk.toString();
    let end: number;
    while ((end = buffered.indexOf('\n')) !== -1) {
      const line = buffered.slice(0, end);
      buffered = buffered.slice(end + 1);
      if (line) onLine(line);
    }
  });
}
