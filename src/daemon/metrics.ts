import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { Operations } from '../fuse/index.js';
import type { DaemonStatus } from './control.js';

/** Prometheus metrics (prom-client), served on their own listen address when configured. */
export class Metrics {
  readonly registry = new Registry();
  readonly fetchSeconds: Histogram<'kind' | 'result'>;
  readonly fetchedBytes: Counter<'kind'>;
  readonly fuseSeconds: Histogram<'op' | 'result'>;

  constructor(status: () => DaemonStatus) {
    const r = this.registry;
    this.fetchSeconds = new Histogram({
      name: 'tocfs_fetch_seconds', help: 'Duration of range fetches from registries', labelNames: ['kind', 'result'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers: [r],
    });
    this.fetchedBytes = new Counter({ name: 'tocfs_fetched_bytes_total', help: 'Compressed bytes fetched from registries', labelNames: ['kind'], registers: [r] });
    this.fuseSeconds = new Histogram({
      name: 'tocfs_fuse_op_seconds', help: 'FUSE operations by opcode', labelNames: ['op', 'result'],
      buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: [r],
    });
    const fromStatus = (name: string, help: string, get: (s: DaemonStatus) => number) => new Gauge({
      name, help, registers: [r],
      collect() { this.set(get(status())); },
    });
    fromStatus('tocfs_served_bytes', 'Uncompressed bytes served to readers (since start)', (s) => s.layers.reduce((n, l) => n + l.servedBytes, 0));
    fromStatus('tocfs_verification_failures', 'Chunks that failed verification (since start)', (s) => s.layers.reduce((n, l) => n + l.verifyFailures, 0));
    fromStatus('tocfs_layers_resolved', 'Layer directories podman looked up and tocfs serves', (s) => s.layers.length);
    fromStatus('tocfs_layers_quarantined', 'Layers whose DiffID proof failed', (s) => s.layers.filter((l) => l.quarantined).length);
    fromStatus('tocfs_memory_cache_hits', 'Memory cache hits (since start)', (s) => s.cache.memory.hits);
    fromStatus('tocfs_memory_cache_misses', 'Memory cache misses (since start)', (s) => s.cache.memory.misses);
    fromStatus('tocfs_memory_cache_bytes', 'Bytes in the memory cache', (s) => s.cache.memory.bytes);
    fromStatus('tocfs_disk_cache_bytes', 'Bytes in the disk cache', (s) => s.cache.disk?.bytes ?? 0);
    fromStatus('tocfs_disk_cache_hits', 'Disk cache hits (since start)', (s) => s.cache.disk?.hits ?? 0);
    fromStatus('tocfs_disk_cache_misses', 'Disk cache misses (since start)', (s) => s.cache.disk?.misses ?? 0);
    fromStatus('tocfs_registry_errors', 'Layer resolutions that failed recently', (s) => s.registryErrors.length);
    fromStatus('tocfs_passthrough_opens', 'Opens served by FUSE passthrough: the kernel reads a complete local copy (since start)', (s) => s.passthrough?.opens ?? 0);
    fromStatus('tocfs_passthrough_files_bytes', 'Bytes of complete files assembled for passthrough (part of the disk cache)', (s) => s.passthrough?.bytes ?? 0);
  }

  onFetch = (seconds: number, bytes: number, ok: boolean, background: boolean): void => {
    const kind = background ? 'background' : 'foreground';
    this.fetchSeconds.observe({ kind, result: ok ? 'ok' : 'error' }, seconds);
    if (bytes) this.fetchedBytes.inc({ kind }, bytes);
  };

  /** Wrap a filesystem so every operation is counted and timed (the FUSE layer itself stays metrics-free). */
  instrument<T extends Operations>(ops: T): Operations {
    const hist = this.fuseSeconds;
    const wrapped: Record<string, unknown> = {};
    const proto = Object.getPrototypeOf(ops) as object;
    const names = new Set([...Object.getOwnPropertyNames(proto), ...Object.keys(ops)]);
    for (const name of names) {
      const fn = (ops as unknown as Record<string, unknown>)[name];
      if (name === 'constructor' || typeof fn !== 'function') continue;
      wrapped[name] = (...args: unknown[]) => {
        const end = hist.startTimer({ op: name });
        try {
          const r = (fn as (...a: unknown[]) => unknown).apply(ops, args);
          if (r instanceof Promise) return r.then((v) => { end({ result: 'ok' }); return v; }, (e: unknown) => { end({ result: 'error' }); throw e; });
          end({ result: 'ok' });
          return r;
        } catch (e) {
          end({ result: 'error' });
          throw e;
        }
      };
    }
    return wrapped as unknown as Operations;
  }

  /** Serve /metrics on host:port. */
  async listen(address: string): Promise<Server> {
    const m = /^(.*):(\d+)$/.exec(address);
    if (!m) throw new Error(`metrics listen address "${address}" is not host:port`);
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry.metrics().then((text) => {
        res.writeHead(200, { 'content-type': this.registry.contentType });
        res.end(text);
      }, (err: Error) => res.writeHead(500).end(err.message));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(m[2]), m[1]!.replace(/^\[|\]$/g, ''), () => resolve());
    });
    server.unref();
    return server;
  }
}
