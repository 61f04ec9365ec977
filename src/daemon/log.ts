import { pino, type Logger } from 'pino';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO ', 40: 'WARN ', 50: 'ERROR', 60: 'FATAL' };

/** One JSON log line as a person reads it: time, level, message, then the fields. */
export function humanLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { level, time, msg, pid: _pid, ...rest } = o;
  const t = new Date(Number(time)).toISOString().slice(11, 23);
  const fields = Object.entries(rest).map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(' ');
  return `${t} ${LEVELS[Number(level)] ?? level} ${String(msg ?? '')}${fields ? `  ${fields}` : ''}\n`;
}

/** JSON lines on stderr; readable lines instead when stderr is a terminal (or format is 'human'). */
export function createLogger(level: string, format: 'auto' | 'json' | 'human' = 'auto'): Logger {
  const human = format === 'human' || (format === 'auto' && process.stderr.isTTY === true);
  if (!human) return pino({ level, base: { pid: process.pid } }, pino.destination(2));
  const stream = { write: (line: string) => { process.stderr.write(humanLine(line)); } };
  return pino({ level, base: { pid: process.pid } }, stream);
}
