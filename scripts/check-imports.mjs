#!/usr/bin/env node
// Checks the module rules of design.md: a folder of src/ is entered only through its index.ts, imports point
// down the data flow only, and there are no cycles between folders.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve, sep } from 'node:path';

const root = resolve(dirname(new URL(import.meta.url).pathname), '..', 'src');
// Allowed imports per folder (besides itself). Order follows design.md §1.
const allowed = {
  util: [],
  format: ['util'],
  fuse: ['util'],
  registry: ['util', 'format'],
  layer: ['util', 'format'],
  store: ['util', 'format', 'layer', 'registry', 'fuse'],
  daemon: ['util', 'format', 'layer', 'registry', 'fuse', 'store', 'convert'],
  convert: ['util', 'format', 'registry'],
  cli: ['util', 'format', 'layer', 'registry', 'fuse', 'store', 'daemon', 'convert'],
};

function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

const problems = [];
for (const file of walk(root)) {
  const from = relative(root, file).split(sep)[0];
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
    const target = relative(root, resolve(dirname(file), m[1]));
    const parts = target.split(sep);
    const to = parts[0];
    if (to === from) continue;
    if (!(to in allowed)) { problems.push(`${relative(root, file)}: imports ${m[1]} outside src/`); continue; }
    if (!allowed[from]?.includes(to)) problems.push(`${relative(root, file)}: ${from} may not import ${to}`);
    if (parts.length !== 2 || parts[1] !== 'index.js') problems.push(`${relative(root, file)}: imports ${m[1]}; use ${to}/index.js`);
  }
}
if (problems.length) { console.error(problems.join('\n')); process.exit(1); }
console.log('imports: ok');
