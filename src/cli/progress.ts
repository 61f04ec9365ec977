/**
 * A one-line progress display on a terminal: redrawn at most 5 times a second, erased when done, silent when
 * stderr is not a TTY (logs and CI output stay clean).
 */
export class ProgressLine {
  private last = 0;
  private shown = false;
  private readonly started = Date.now();

  constructor(private readonly stream: NodeJS.WriteStream = process.stderr, private readonly minBytes = 32 << 20) {}

  update(text: string, bytes: number): void {
    if (!this.stream.isTTY || bytes < this.minBytes) return;
    const now = Date.now();
    if (now - this.last < 200) return;
    this.last = now;
    const rate = bytes / Math.max(0.001, (now - this.started) / 1000);
    const line = `${text}  ${mib(rate)}/s`;
    this.stream.write(`\r\x1b[2K${line.slice(0, (this.stream.columns ?? 100) - 1)}`);
    this.shown = true;
  }

  done(): void {
    if (this.shown) this.stream.write('\r\x1b[2K');
    this.shown = false;
  }
}

export function mib(n: number): string {
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}
