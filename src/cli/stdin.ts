/** Everything on standard input, as UTF-8 (podman's auth JSON, a `--prefetch -` list). */
export async function readStdin(): Promise<string> {
  const parts: Buffer[] = [];
  for await (const b of process.stdin) parts.push(b as Buffer);
  return Buffer.concat(parts).toString('utf8');
}
