// The deadline plumbing of the HTTP layer, where it can be tested without a server: `bounded` must not settle an
// operation as timed out before Date.now() has reached its deadline (CI once saw a nested wait fire a millisecond
// early and name the ping instead of the read).
import assert from 'node:assert/strict';
import { bounded } from '../../src/registry/http.js';
import { RegistryTimeoutError } from '../../src/registry/index.js';

describe('registry: http deadlines', () => {
  const realNow = Date.now;
  afterEach(() => { Date.now = realNow; });

  it('times an operation out only once Date.now() has reached its deadline, even if the wall clock steps back', async () => {
    let lagMs = 0;
    Date.now = () => realNow() - lagMs;
    const deadline = Date.now() + 100;
    const never = new Promise<never>(() => undefined);
    const settled = bounded(never, { what: 'reading bytes 0-9 of blob b', host: 'h', limits: { deadline } })
      .then(() => assert.fail('a promise that never settles cannot succeed'), (err: unknown) => ({ err, at: Date.now() }));
    lagMs = 40; // the wall clock steps back after the timer was armed on the monotonic clock
    const { err, at } = await settled;
    assert.ok(err instanceof RegistryTimeoutError, String(err));
    assert.ok(at >= deadline, `timed out ${deadline - at} ms before the deadline`);
    assert.match(err.message, /reading bytes 0-9 of blob b/);
  });

  it('times out with its own error when the deadline passes between its check and its timer', async () => {
    const base = realNow();
    let calls = 0;
    // Before the deadline for the check on entry, past it from then on.
    Date.now = () => (++calls <= 2 ? base : base + 100);
    const never = new Promise<never>(() => undefined);
    const err = await bounded(never, { what: 'reading bytes 0-9 of blob b', host: 'h', limits: { deadline: base + 1 } }).then(
      () => assert.fail('a promise that never settles cannot succeed'), (e: unknown) => e);
    assert.ok(err instanceof RegistryTimeoutError, String(err));
  });

  it('settles with the work when it ends before the deadline', async () => {
    const got = await bounded(Promise.resolve(7), { what: 'w', host: 'h', limits: { deadline: Date.now() + 1000 } });
    assert.equal(got, 7);
  });
});
