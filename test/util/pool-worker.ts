// A worker script for worker-pool.test.ts: tasks that succeed, fail, ask the main thread, crash or run out of memory.
import { serveTasks, type TaskContext, type TaskResult } from '../../src/util/index.js';

serveTasks({
  double: ((input: { n: number }) => ({ value: input.n * 2 })) as (input: never) => TaskResult,
  fail: (() => { throw Object.assign(new Error('task said no'), { code: 'TASK_SAID_NO' }); }) as (input: never) => TaskResult,
  ask: (async (input: { times: number }, ctx: TaskContext) => {
    let sum = 0;
    for (let i = 0; i < input.times; i++) sum += await ctx.request<number>({ i });
    return { value: sum };
  }) as (input: never, ctx: TaskContext) => Promise<TaskResult>,
  crash: (() => { process.exit(3); }) as (input: never) => TaskResult,
  crashLater: (() => {
    setTimeout(() => { throw new Error('failed after its task'); }, 20);
    return { value: 'ok' };
  }) as (input: never) => TaskResult,
  hog: (() => {
    const keep: number[][] = [];
    for (;;) keep.push(new Array<number>(1 << 20).fill(1));
  }) as (input: never) => TaskResult,
  transfer: ((input: { size: number }) => {
    const b = Buffer.alloc(input.size, 7);
    return { value: b, transfer: [b.buffer as ArrayBuffer] };
  }) as (input: never) => TaskResult,
});
