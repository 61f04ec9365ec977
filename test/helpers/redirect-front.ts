// A "redirecting front" like registries backed by object storage: blob GET/HEAD requests are answered with
// 307 to another loopback URL (`target` + the same path); everything else is proxied to `upstream`.
import { BLOB_PATH, startFaultProxy, type FaultProxy } from './fault-proxy.js';

export interface RedirectFront extends FaultProxy {
  /** Blob requests answered with a redirect so far. */
  redirects(): number;
}

export async function startRedirectFront(upstream: string, target: string, status = 307): Promise<RedirectFront> {
  const proxy = await startFaultProxy(upstream);
  proxy.setRule((req) => ((req.method === 'GET' || req.method === 'HEAD') && BLOB_PATH.test(req.url ?? '')
    ? { kind: 'redirect', location: target, appendPath: true, status } : undefined));
  return Object.assign(proxy, { redirects: () => proxy.requests.filter((r) => r.fault === 'redirect').length });
}
