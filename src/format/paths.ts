/** A spelling path.Clean leaves as it is: no empty, "." or ".." element, no trailing slash (but "/"). */
const UNCLEAN = /\/\/|(^|\/)\.\.?(\/|$)/;
function isClean(p: string): boolean {
  return p !== '' && (p === '/' || (!p.endsWith('/') && !UNCLEAN.test(p)));
}

/**
 * Go's path.Clean: lexical, '/'-separated; "" becomes ".". Names that are clean already, or clean behind one "./"
 * (how tar-split spells every name), are returned without splitting: every TOC entry and tar-split line of every
 * layer comes through here while podman waits for the lookup.
 */
export function goClean(p: string): string {
  if (isClean(p)) return p;
  if (p.startsWith('./') && p.charCodeAt(2) !== 0x2f && isClean(p.slice(2))) return p.slice(2);
  return cleanSlowly(p);
}

function cleanSlowly(p: string): string {
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
