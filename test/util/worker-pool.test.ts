import assert from 'node:assert/strict';
import { WorkerPool, WorkerTaskError } from '../../src/util/index.js';

const script = new URL('./pool-worker.js', import.meta.url);

describe('util: worker pool', function () {
  this.timeout(60_000);
  const pools: WorkerPool[] = [];
  const pool = (opts: Partial<ConstructorParameters<typeof WorkerPool>[0]> = {}) => {
    const p = new WorkerPool({ name: 'test pool', script, size: 2, ...opts });
    pools.push(p);
    return p;
  };
  after(async () => { for (const p of pools) await p.close(); });

  it('runs tasks on at most `size` workers and returns their results', async () => {
    const p = pool();
    const results = await Promise.all(Array.from({ length: 10 }, (_, n) => p.run<number>('double', { n })));
    assert.deepEqual(results, Array.from({ length: 10 }, (_, n) => n * 2));
    assert.ok(p.workers <= 2 && p.workers >= 1);
    assert.equal(p.stats.tasks, 10);
  });

  it('starts its workers ahead of tasks when asked, and lets them exit when no task comes', async () => {
    const p = pool({ idleExitMs: 200 });
    p.prewarm(1);
    assert.equal(p.workers, 1, 'as many as asked');
    p.prewarm();
    assert.equal(p.workers, 2, 'both started at once');
    p.prewarm();
    assert.equal(p.workers, 2, 'never more than the size');
    assert.equal(await p.run<number>('double', { n: 21 }), 42);
    await new Promise((r) => setTimeout(r, 800));
    assert.equal(p.workers, 0, 'idle workers exited');
  });

  it("carries a task's error message and code across the thread", async () => {
    await assert.rejects(pool().run('fail', {}), (e: WorkerTaskError) => e instanceof WorkerTaskError && e.code === 'TASK_SAID_NO' && e.message === 'task said no');
  });

  it('answers requests a task makes to the main thread, per run', async () => {
    const seen: unknown[] = [];
    const sum = await pool().run<number>('ask', { times: 3 }, { onRequest: async (body) => { seen.push(body); return { value: 10 }; } });
    assert.equal(sum, 30);
    assert.deepEqual(seen, [{ i: 0 }, { i: 1 }, { i: 2 }]);
  });

  it('turns a worker that dies into WORKER_DIED for its tasks, and keeps serving with a new worker', async () => {
    const p = pool({ size: 1 });
    await assert.rejects(p.run('crash', {}), (e: WorkerTaskError) => e.code === 'WORKER_DIED' && /died/.test(e.message));
    assert.equal(await p.run('double', { n: 4 }), 8);
    assert.equal(p.stats.crashes, 1);
  });

  it('counts a worker that fails between tasks as a crash, though no task was lost', async () => {
    const p = pool({ size: 1 });
    assert.equal(await p.run('crashLater', {}), 'ok');
    for (let i = 0; i < 50 && p.stats.crashes === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(p.stats.crashes, 1);
    assert.equal(await p.run('double', { n: 5 }), 10, 'a new worker serves');
  });

  it('turns a task beyond the heap limit into WORKER_OUT_OF_MEMORY, not a dead process', async () => {
    const p = pool({ size: 1, resourceLimits: { maxOldGenerationSizeMb: 32 } });
    await assert.rejects(p.run('hog', {}), (e: WorkerTaskError) => e.code === 'WORKER_OUT_OF_MEMORY' && /32 MiB heap/.test(e.message));
    assert.equal(await p.run('double', { n: 1 }), 2);
  });

  it('hands buffers back without a copy, lets idle workers exit, and refuses work once closed', async () => {
    const p = pool({ size: 1, idleExitMs: 50 });
    const b = await p.run<Uint8Array>('transfer', { size: 1 << 20 });
    assert.equal(b.length, 1 << 20);
    assert.equal(b[12345], 7);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(p.workers, 0, 'the idle worker exited');
    await p.close();
    await assert.rejects(p.run('double', { n: 1 }), (e: WorkerTaskError) => e.code === 'POOL_CLOSED');
  });
});
