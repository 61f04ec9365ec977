/** Go's path.Clean: lexical, '/'-separated; "" becomes ".". */
export function goClean(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const out: string[] = [];
  for (const part of p.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0 && out[out.length - 1] !== '..') out.pop();
      else if (!rooted) out.push('..');
      continue;
    }
    out.push(part);
  }
  const joined = out.join('/');
  if (rooted) return '/' + joined;
  return joined === '' ? '.' : joined;
}

/** c/storage's CleanAbsPath: the path an entry occupies inside the layer root, always absolute. */
export function cleanAbsPath(name: string): string {
  return goClean('/' + name);
}

/** True when the name walks upwards somewhere ("a/../../b", "../x"): c/storage clamps these; we refuse them. */
export function hasDotDot(name: string): boolean {
  return name.split('/').includes('..');
}
