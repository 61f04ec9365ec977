import type { TarTime } from './tar.js';

/** Go's time.Time{}.IsZero() instant: 0001-01-01T00:00:00Z. */
const GO_ZERO_SEC = -62135596800;

export function isGoZeroTime(t: TarTime): boolean {
  return t.sec === GO_ZERO_SEC && t.nsec === 0;
}

/**
 * RFC 3339 with nanoseconds and trailing zeros trimmed, in UTC: how Go marshals a time.Time to JSON (the
 * reference writer ran in UTC; any zone denotes the same instant and c/storage compares instants).
 */
export function formatRfc3339Nano(t: TarTime): string {
  const ms = t.sec * 1000;
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  if (!Number.isFinite(ms) || Number.isNaN(d.getTime()) || year < 0 || year > 9999) {
    throw new RangeError(`time ${t.sec}s is outside the years 0-9999 that RFC 3339 can express`);
  }
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  let s = `${p(year, 4)}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())}T${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
  if (t.nsec > 0) s += '.' + String(t.nsec).padStart(9, '0').replace(/0+$/, '');
  return s + 'Z';
}

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/** Parse what Go's time.Parse(time.RFC3339, …) accepts; undefined when malformed. */
export function parseRfc3339(s: string): TarTime | undefined {
  const m = RFC3339.exec(s);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, se, frac, , sign, oh, om] = m;
  const month = Number(mo), day = Number(d), hour = Number(h), min = Number(mi), sec = Number(se);
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 59) return undefined;
  const ms = Date.UTC(Number(y), month - 1, day, hour, min, sec);
  const check = new Date(ms);
  if (check.getUTCDate() !== day) return undefined; // 2023-02-30 and the like
  let epoch = Math.floor(ms / 1000);
  if (Number(y) < 100) {
    // Date.UTC maps years 0-99 to 1900-1999; Go does not.
    const dt = new Date(0);
    dt.setUTCFullYear(Number(y), month - 1, day);
    dt.setUTCHours(hour, min, sec, 0);
    epoch = Math.floor(dt.getTime() / 1000);
  }
  if (sign) {
    const off = (Number(oh) * 60 + Number(om)) * 60;
    epoch += sign === '+' ? -off : off;
  }
  const nsec = frac ? Number(frac.padEnd(9, '0')) : 0;
  return { sec: epoch, nsec };
}

/** c/storage's time comparison in the TOC↔tar-split check: unset, Go-zero and the Unix epoch are all "no time". */
export function sameTime(a: TarTime | undefined, b: TarTime | undefined): boolean {
  const none = (t: TarTime | undefined) => t === undefined || isGoZeroTime(t) || (t.sec === 0 && t.nsec === 0);
  if (none(a) || none(b)) return none(a) && none(b);
  return a!.sec === b!.sec && a!.nsec === b!.nsec;
}
