import assert from 'node:assert/strict';
import { BackgroundScheduler } from '../../src/layer/index.js';

const tick = (ms = 30) => new Promise((r) => setTimeout(r, ms));

describe('layer: background scheduler', () => {
  it('gives a free slot to the best rank waiting (across layers: small files before the rest)', async () => {
    const s = new BackgroundScheduler(1, { pollMs: 2 });
    const held = await s.acquire(2);
    const granted: number[] = [];
    const w2 = s.acquire(2).then((x) => { granted.push(2); return x; });
    await tick(10);
    const w1 = s.acquire(1).then((x) => { granted.push(1); return x; });
    await tick();
    assert.deepEqual(granted, [], 'both wait while the only slot is taken');
    held.release();
    const g1 = await w1;
    await tick();
    assert.deepEqual(granted, [1], 'the later but better request went first; the other still waits');
    g1.release();
    (await w2).release();
    assert.deepEqual(granted, [1, 2]);
  });

  it('starts no small-file or other batch while readers fetch and shortly after, except one that waited too long', async () => {
    const s = new BackgroundScheduler(2, { pollMs: 2, quietMs: 10, readerQuietMs: 80, readerMaxWaitMs: 300, readerCalmMs: 1000 });
    const reader = { foreground: 1, lastForegroundAt: 0 };
    s.register(reader as unknown as Parameters<BackgroundScheduler['register']>[0]);
    const granted: { rank: number; at: number; budget: number }[] = [];
    const t0 = Date.now();
    const take = (rank: 1 | 2) => s.acquire(rank).then((x) => { granted.push({ rank, at: Date.now() - t0, budget: x.budget }); return x; });
    const hinted = await s.acquire(0);
    assert.equal(hinted.budget, 2 << 20, 'rank 0 (what the reader reads next) runs beside it, at full size');
    hinted.release();
    const small = take(1);
    await tick(100);
    assert.equal(granted.length, 0, 'a reader is fetching: nothing else starts');
    reader.foreground = 0;
    reader.lastForegroundAt = Date.now();
    await tick(40);
    assert.equal(granted.length, 0, 'within the reader quiet period');
    (await small).release();
    assert.ok(granted[0]!.at >= 170, `granted ${granted[0]!.at} ms after the reader's last fetch ended`);
    assert.equal(granted[0]!.budget, 256 << 10, 'a small batch while the reader may come back');
    // A reader that never stops: a waiting batch goes after readerMaxWaitMs, alone.
    reader.foreground = 1;
    const t1 = Date.now();
    const [a, b] = [take(2), take(2)];
    const first = await Promise.race([a, b]);
    assert.ok(Date.now() - t1 >= 290, 'held up to the longest wait');
    await tick(20);
    assert.equal(granted.length, 2, 'one at a time while the reader keeps fetching');
    first.release();
    reader.foreground = 0;
    reader.lastForegroundAt = 0;
    (await a).release();
    (await b).release();
    assert.equal(granted.length, 3);
    assert.equal(granted[2]!.budget, 2 << 20, 'full batches once readers have been calm');
    const both = [await s.acquire(2), await s.acquire(2)];
    assert.equal(both.length, 2, 'and every slot');
    for (const x of both) x.release();
  });

  it('holds less urgent work of every layer while any layer still has hinted or first-read work (rank 0)', async () => {
    const s = new BackgroundScheduler(2, { pollMs: 2 });
    const done = s.rank0Start();
    const granted: number[] = [];
    const small = s.acquire(1).then((x) => { granted.push(1); return x; });
    await tick();
    assert.deepEqual(granted, [], 'a free slot, but rank-0 work is still under way');
    const hinted = await s.acquire(0);
    assert.equal(hinted.budget, 2 << 20);
    done();
    (await small).release();
    hinted.release();
    assert.deepEqual(granted, [1]);
  });

  it('holds all but rank-0 work while a layer\'s TOC is fetched and processed (podman waits for it)', async () => {
    const s = new BackgroundScheduler(2, { pollMs: 2 });
    const done = s.lookupStart();
    const granted: number[] = [];
    const small = s.acquire(1).then((x) => { granted.push(1); return x; });
    const rest = s.acquire(2).then((x) => { granted.push(2); return x; });
    await tick();
    assert.deepEqual(granted, [], 'free slots, but a lookup is under way');
    const hinted = await s.acquire(0);
    hinted.release();
    done();
    done(); // idempotent
    (await small).release();
    (await rest).release();
    assert.deepEqual(granted.sort(), [1, 2]);
  });

  it('is idle only after the filesystem was quiet for the quiet period', async () => {
    let requests = 0;
    const s = new BackgroundScheduler(2, { quietMs: 60, pollMs: 2, activity: () => requests });
    assert.equal(s.idle(), false, 'a first look counts as activity');
    await tick(80);
    assert.equal(s.idle(), true);
    requests++;
    assert.equal(s.idle(), false, 'a FUSE request just happened');
    const t0 = Date.now();
    await s.whenIdle();
    assert.ok(Date.now() - t0 >= 50, 'whenIdle waited for the quiet period');
  });

  it('waits for a quiet stretch, not a pause, when asked (and never longer than its bound)', async () => {
    let requests = 0;
    const s = new BackgroundScheduler(2, { quietMs: 20, pollMs: 2, activity: () => requests });
    const t0 = Date.now();
    const bursts = setInterval(() => { if (Date.now() - t0 < 300) requests++; }, 60); // pauses of 60 ms for 300 ms
    await s.whenIdleFor(200, 5000);
    clearInterval(bursts);
    assert.ok(Date.now() - t0 >= 450, `resolved ${Date.now() - t0} ms in: after the bursts and 200 ms of quiet`);
    const busy = setInterval(() => { requests++; }, 5);
    const t1 = Date.now();
    await s.whenIdleFor(200, 300);
    clearInterval(busy);
    assert.ok(Date.now() - t1 < 1000, 'bounded');
  });

  it('never starves CPU-heavy work on a busy filesystem: pauses are bounded and the slot is given back meanwhile', async () => {
    let requests = 0;
    const s = new BackgroundScheduler(1, { quietMs: 40, pollMs: 2, maxPauseMs: 30, activity: () => requests });
    const busy = setInterval(() => { requests++; }, 5);
    let steps = 0;
    let slotWhilePaused = false;
    await s.slot(async (pace) => {
      for (let i = 0; i < 5; i++) {
        const other = s.acquire(2).then((x) => { slotWhilePaused = true; x.release(); });
        await pace();
        await other;
        steps++;
      }
    });
    clearInterval(busy);
    assert.equal(steps, 5);
    assert.ok(slotWhilePaused, 'background fetches got the slot while the work paused');
  });

  it('runs CPU-heavy work only when idle, and lets it pause while the filesystem is used', async () => {
    let requests = 0;
    const s = new BackgroundScheduler(2, { quietMs: 40, pollMs: 2, activity: () => requests });
    const steps: number[] = [];
    const busy = setInterval(() => { requests++; }, 5);
    const work = s.slot(async (pace) => {
      for (let i = 0; i < 3; i++) {
        await pace();
        steps.push(Date.now());
      }
    });
    await tick(100);
    assert.deepEqual(steps, [], 'no step while requests keep coming');
    clearInterval(busy);
    await work;
    assert.equal(steps.length, 3);
  });
});
