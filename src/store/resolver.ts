import { createHash } from 'node:crypto';
import { access, open, mkdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import {
  ARTIFACT_TYPE_PREFETCH, layerKind, MEDIA_TYPE_SENTINEL, parsePrefetchArtifact, parsePrefetchHint, parseReadRecord, readLayerSections, type LayerSections,
  type PrefetchHintList,
} from '../format/index.js';
import {
  ChunkCache, LayerContent, LayerPrefetcher, LayerTree, layerWork, nodeAt,
  type BackgroundScheduler, type BlobSource, type ContentLogger, type IndexFiles, type LayerWork,
} from '../layer/index.js';
import {
  findArtifact, parseImageConfig, parseReference, withDigest, type Descriptor, type ImageManifest, type ImageReference, type RegistryClient,
} from '../registry/index.js';
import { isDigest, TocfsError, writeStateFile, type Digest } from '../util/index.js';
import type { KeyGeneration } from './info.js';

/** Why a key is not served lazily; the store answers ENOENT and podman pulls the layer itself. */
export class NotServable extends TocfsError {}

/** One image instance (a manifest and its config's DiffIDs). */
interface Instance {
  manifest: ImageManifest;
  diffIds: Digest[];
}

export type ProofPolicy = 'background' | 'before-use' | 'off';

/** A layer's verified tree (from its TOC and tar-split, or kept by an earlier run), with the local state read meanwhile. */
interface EarlyToc {
  source: BlobSource;
  tree: LayerTree;
  /** Where the layer's verified tar-split is kept (the proof reads it). */
  files: IndexFiles | undefined;
  provenBefore: Promise<{ diffID: unknown; size: unknown; toc: unknown } | undefined>;
  readBefore: Promise<PrefetchHintList>;
}

/** Layers of one manifest whose TOCs are fetched before its config arrived (more go the ordinary way). */
const MAX_EARLY_TOCS = 16;

/** Where the DiffID proof of a layer stands. */
export interface ProofStatus {
  state: 'pending' | 'running' | 'proven' | 'mismatch' | 'skipped' | 'failed' | 'off';
  detail?: string;
}

interface ImageState {
  ref: ImageReference;
  /** Paths of a prefetch hint attached to the image as an artifact (`tocfs hint`); [] without one. */
  hint: Promise<PrefetchHintList>;
  instances: Instance[];
  /** Further candidate manifests of an index, fetched only when a key is not in the ones above. */
  more: Descriptor[];
}

/** A layer's verified TOC, tree and content reader; shared by both key generations of the same blob. */
export interface LayerData {
  ref: ImageReference;
  descriptor: Descriptor;
  diffID: Digest;
  /** The TOC digest (the annotation's, verified). */
  tocDigest: Digest;
  /** Exact size of the layer's tar. */
  diffSize: number;
  /** Files, directories and links the TOC lists. */
  entries: number;
  tree: LayerTree;
  /** Where the verified tree and tar-split are kept. */
  files: IndexFiles | undefined;
  content: LayerContent;
  source: BlobSource;
  /** Set once the whole blob was fetched and verified for `blob` reads. */
  blobFile?: Promise<string>;
  prefetcher?: LayerPrefetcher;
  proof: ProofStatus;
  /** Why the layer is no longer served (its tar does not match the config's DiffID). */
  quarantined?: string;
  /** Settles when the layer's background work (fetch, proof) is over. */
  background?: Promise<void>;
  /** Whether a chunk is in memory or on disk. */
  isLocal(digest: string): boolean;
  /** Files of the layer's prefetch hint (format/prefetch.ts) found in its tree. */
  hintedFiles: number;
  /** The layer's files in the order containers first read them (recorded here, kept across restarts). */
  firstReads(): string[];
  /** The byte ranges read of the files of firstReads() that were read only in part. */
  firstReadRanges(): Record<string, [number, number][]>;
}

export interface FoundLayer {
  data: LayerData;
  generation: KeyGeneration;
  /** What Resolver.reopen needs to open this layer again without the registry. */
  recorded: RecordedLayer;
}

/** The verified facts a lookup established about a layer: its manifest descriptor and its config's DiffID. */
export interface RecordedLayer {
  descriptor: Descriptor;
  diffID: Digest;
  /** The image is a zstd:chunked sentinel variant (no DiffID proof possible). */
  sentinel: boolean;
  generation: KeyGeneration;
}

export interface ResolverOptions {
  client: RegistryClient;
  cache: ChunkCache;
  /** Directory for verified blob copies (the `blob` file). */
  blobDir: string;
  /**
   * Where verified trees and tar-splits are kept per TOC digest: a restarted daemon loads a layer's tree in
   * milliseconds instead of fetching and parsing its TOC again, and the DiffID proof reads the tar-split from here.
   */
  indexDir?: string;
  /** Worker threads for TOCs, big chunks and proofs (default: the process's). */
  work?: LayerWork;
  /** Aborted when the daemon stops: fetches and background work end at once. */
  stop?: AbortSignal;
  readaheadBytes?: number;
  /** See ContentOptions.dirPrefetchBytes. */
  dirPrefetchBytes?: number;
  /** See ContentOptions.nearbyBytes. */
  nearbyBytes?: number;
  /** See ContentOptions.nearbyMaxBytes. */
  nearbyMaxBytes?: number;
  /** See ContentOptions.wholeFileBytes. */
  wholeFileBytes?: number;
  logger?: ContentLogger & { info(obj: object, msg: string): void };
  /** How long a failed resolution is remembered before it is tried again (ms). */
  failureTtlMs?: number;
  /** Layers of one image whose TOCs are fetched at once when the image is first seen. */
  prefetchConcurrency?: number;
  /** Background fetch of whole layers (off: only what is read is fetched). */
  backgroundFetch?: boolean;
  scheduler?: BackgroundScheduler;
  proof?: ProofPolicy;
  /** Where the first-read order of each layer is kept (prefetch priority next time). */
  accessDir?: string;
  /** Where passed DiffID proofs are recorded, so a restarted daemon does not hash its layers again. */
  proofDir?: string;
  fetchTimeoutMs?: number;
  onFetch?: (seconds: number, bytes: number, ok: boolean, background: boolean) => void;
  /** A layer became local (its background fetch is done): copies for passthrough that waited for it are made. */
  onLayerLocal?: (tree: LayerTree) => void;
  /** An image was resolved (its manifest and config fetched) from the registry of `ref`. */
  onImage?: (ref: string) => void;
}

/** A resolution that failed, for `tocfs status` (no secrets: messages name refs and layers only). */
export interface ResolveFailure {
  time: string;
  ref: string;
  key: string;
  code: string;
  message: string;
}

const TOC_ANNOTATION = 'io.github.containers.zstd-chunked.manifest-checksum';

/** The reference a key directory names, or NotServable (podman then pulls normally). */
function servableRef(refString: string): ImageReference {
  try {
    return parseReference(refString);
  } catch (err) {
    throw new NotServable('BAD_REF', `"${refString}" is not an image reference: ${(err as Error).message}`);
  }
}

/** Proof failures that say nothing about the layer: it is tried again later instead of being quarantined. */
const TRANSIENT_PROOF_ERRORS = new Set(['FETCH_FAILED', 'EINTR', 'STOPPED', 'POOL_CLOSED', 'WORKER_DIED', 'TARSPLIT_MISSING']);

/**
 * Turns (ref, key) into a servable layer: manifest (index → host platform, every candidate searched), layer
 * descriptor by blob digest or TOC digest, TOC + tar-split fetched in one request and verified, tree built.
 * Everything is cached and in-flight work is shared, so the stat storm of a pull costs one resolution.
 */
export class Resolver {
  private readonly images: LRUCache<string, Promise<ImageState>>;
  private readonly layers = new Map<string, Promise<LayerData>>();
  private readonly failures: LRUCache<string, NotServable>;
  /** The latest failures, newest last (bounded). */
  readonly recentFailures: ResolveFailure[] = [];

  /** TOCs fetched as soon as a manifest was known, until openLayer takes them (see fetchTocsEarly). */
  private readonly earlyTocs = new Map<string, Promise<EarlyToc>>();
  /** DiffID proofs that passed, kept across restarts. */
  private readonly proofs: ProofRecords | undefined;

  constructor(private readonly opts: ResolverOptions) {
    this.images = new LRUCache({ max: 256, ttl: 10 * 60_000 });
    this.proofs = opts.proofDir ? new ProofRecords(opts.proofDir) : undefined;
    // Short: a failure is often transient (a registry hiccup, a corrupted response), and while it is remembered
    // podman sees the layer as absent (it then pulls it, which is correct but slow).
    this.failures = new LRUCache({ max: 4096, ttl: Math.max(1, opts.failureTtlMs ?? 3_000) });
  }

  /** Forget remembered failures (new credentials arrived: what failed may work now). */
  clearFailures(): void {
    this.failures.clear();
  }

  /** The layer `key` of image `refString`, or NotServable. */
  async find(refString: string, key: Digest): Promise<FoundLayer> {
    const id = `${refString}\0${key}`;
    const failed = this.failures.get(id);
    if (failed) throw failed;
    try {
      return await this.findUncached(refString, key);
    } catch (err) {
      const e = err instanceof NotServable ? err : new NotServable('RESOLVE_FAILED', `${refString} layer ${key}: ${(err as Error).message}`, { cause: err });
      this.failures.set(id, e);
      this.recentFailures.push({ time: new Date().toISOString(), ref: refString, key, code: String(e.code), message: e.message });
      if (this.recentFailures.length > 50) this.recentFailures.shift();
      this.opts.logger?.warn({ ref: refString, key, code: (err as TocfsError).code }, e.message);
      throw e;
    }
  }

  private async findUncached(refString: string, key: Digest): Promise<FoundLayer> {
    const ref = servableRef(refString);
    const image = await this.image(ref);
    const hit = await this.locate(image, key);
    if (!hit) throw new NotServable('NO_SUCH_LAYER', `${ref.string}: no layer with blob or TOC digest ${key}`);
    const { desc, diffID, sentinel } = hit;
    const kind = layerKind(desc.annotations);
    if (kind !== 'zstd:chunked') throw new NotServable('NOT_CHUNKED', `${ref.string} layer ${desc.digest} is ${kind}; podman pulls it normally`);
    const generation: KeyGeneration = key === desc.digest ? 'blob' : 'toc';
    return this.servable(ref, { descriptor: desc, diffID, sentinel, generation }, image.hint);
  }

  /**
   * A layer found before, by this daemon or by an earlier server of the same mount (the store's namespace
   * journal): opened from the recorded descriptor and DiffID, which the verified manifest and config named, so a
   * restarted server answers the node ids the kernel holds without waiting for the registry (or for credentials
   * that only the dead server had). The tree comes from the local index when kept there, else from the registry.
   */
  async reopen(refString: string, recorded: RecordedLayer): Promise<FoundLayer> {
    return this.servable(servableRef(refString), recorded);
  }

  /** `hint`: a prefetch hint attached to the image (none for a reopened layer: its first reads are on record). */
  private async servable(ref: ImageReference, recorded: RecordedLayer, hint: Promise<PrefetchHintList> = Promise.resolve(NO_HINT)): Promise<FoundLayer> {
    const { descriptor: desc, diffID, sentinel, generation } = recorded;
    const data = await this.layerData(ref, desc, diffID, sentinel, hint);
    if (this.opts.proof === 'before-use' && data.proof.state !== 'proven' && data.proof.state !== 'skipped') {
      // before-use: the layer appears only once its tar is proven to be the DiffID the config promises.
      await data.background;
    }
    if (data.quarantined) throw new NotServable('QUARANTINED', data.quarantined);
    if (this.opts.proof === 'before-use' && data.proof.state === 'failed') {
      throw new NotServable('UNPROVEN', `${ref.string} layer ${desc.digest}: its DiffID could not be proven yet (${data.proof.detail}); try again`);
    }
    return { data, generation, recorded };
  }

  private image(ref: ImageReference): Promise<ImageState> {
    let p = this.images.get(ref.string);
    if (!p) {
      p = this.loadImage(ref);
      this.images.set(ref.string, p);
      p.then((img) => this.prefetchTocs(img), () => this.images.delete(ref.string));
    }
    return p;
  }

  private async loadImage(ref: ImageReference): Promise<ImageState> {
    let r: Awaited<ReturnType<RegistryClient['resolveImage']>>;
    try {
      r = await this.opts.client.resolveImage(ref, {
        ...this.bound(),
        onManifest: (m) => {
          try {
            this.fetchTocsEarly(ref, m);
          } catch {
            // Only an optimisation: the layers are opened the ordinary way.
          }
        },
      });
    } catch (err) {
      this.dropEarlyTocs(ref);
      throw err;
    }
    this.opts.onImage?.(ref.string);
    return {
      ref, hint: this.attachedHint(ref, r.index?.digest ?? r.manifest.digest),
      instances: [{ manifest: r.manifest.manifest, diffIds: r.config.diffIds }],
      more: r.candidates.slice(1),
    };
  }

  /**
   * A prefetch hint attached to the image (OCI referrers, tag schema), looked up while its layers open. It only
   * orders the background fetch, so any failure is logged and means "no hint".
   */
  private attachedHint(ref: ImageReference, subject: Digest): Promise<PrefetchHintList> {
    return findArtifact(this.opts.client, ref, subject, ARTIFACT_TYPE_PREFETCH, this.bound())
      .then((blob) => (blob ? parsePrefetchArtifact(blob) : NO_HINT))
      .catch((err: unknown) => {
        this.opts.logger?.warn({ ref: ref.string, subject }, `${ref.string}: attached prefetch hint ignored: ${(err as Error).message}`);
        return NO_HINT;
      });
  }

  /** Find the layer whose blob digest or TOC digest is `key`, looking into further index candidates if needed. */
  private async locate(image: ImageState, key: Digest): Promise<{ desc: Descriptor; diffID: Digest; sentinel: boolean } | undefined> {
    const search = (inst: Instance) => {
      const i = inst.manifest.layers.findIndex((l) => l.digest === key || l.annotations?.[TOC_ANNOTATION] === key);
      const sentinel = inst.manifest.layers[0]?.mediaType === MEDIA_TYPE_SENTINEL;
      return i < 0 ? undefined : { desc: inst.manifest.layers[i]!, diffID: inst.diffIds[i]!, sentinel };
    };
    for (const inst of image.instances) {
      const hit = search(inst);
      if (hit) return this.checkDiffId(image, hit);
    }
    while (image.more.length > 0) {
      const cand = image.more.shift()!;
      const m = await this.opts.client.fetchManifest(withDigest(image.ref, cand.digest), this.bound());
      if (m.manifest.kind !== 'manifest') continue;
      const config = await this.opts.client.fetchBlob(image.ref, m.manifest.config, this.bound());
      const inst = { manifest: m.manifest, diffIds: parseImageConfig(config, `config of ${image.ref.string}`).diffIds };
      image.instances.push(inst);
      const hit = search(inst);
      if (hit) return this.checkDiffId(image, hit);
    }
    return undefined;
  }

  private checkDiffId(image: ImageState, hit: { desc: Descriptor; diffID: Digest | undefined; sentinel: boolean }): { desc: Descriptor; diffID: Digest; sentinel: boolean } {
    if (!hit.diffID) throw new NotServable('NO_DIFFID', `${image.ref.string}: the config has no DiffID for layer ${hit.desc.digest}`);
    return hit as { desc: Descriptor; diffID: Digest; sentinel: boolean };
  }

  private layerData(ref: ImageReference, desc: Descriptor, diffID: Digest, sentinel: boolean, imageHint: Promise<PrefetchHintList>): Promise<LayerData> {
    const id = `${ref.string}\0${desc.digest}`;
    let p = this.layers.get(id);
    if (!p) {
      p = this.openLayer(ref, desc, diffID, sentinel, imageHint);
      this.layers.set(id, p);
      p.catch(() => this.layers.delete(id));
    }
    return p;
  }

  /**
   * Registry calls of one lookup end by fetch_timeout from now, retries included (a black-holed registry must not
   * hold podman's stat for minutes), or when the daemon stops.
   */
  private bound(): { deadline: number; signal?: AbortSignal } {
    return { deadline: Date.now() + (this.opts.fetchTimeoutMs ?? 30_000), ...(this.opts.stop ? { signal: this.opts.stop } : {}) };
  }

  private get work(): LayerWork {
    return this.opts.work ?? layerWork();
  }

  /** Files of the layer with this TOC digest under indexDir (undefined without an indexDir or a sane digest). */
  private indexFiles(tocDigest: string | undefined): IndexFiles | undefined {
    if (!this.opts.indexDir || !isDigest(tocDigest)) return undefined;
    const base = join(this.opts.indexDir, tocDigest.slice(7));
    return { index: `${base}.tree`, tarSplit: `${base}.tarsplit` };
  }

  /**
   * A layer's verified tree: kept by an earlier run (by TOC digest: no fetch at all), or its TOC and tar-split
   * fetched in one range request and verified, parsed and built on a worker thread. Local state is read while the
   * TOC is on its way: awaiting a file read after the TOC arrived let the other layers' TOC processing run first,
   * which delayed this layer's first background request by ~0.4 s during podman pull (bench:coldstart).
   */
  private async readToc(ref: ImageReference, desc: Descriptor): Promise<EarlyToc> {
    const tocDigest = desc.annotations?.[TOC_ANNOTATION];
    const provenBefore = this.proofs?.read(desc.digest) ?? Promise.resolve(undefined);
    const readBefore = AccessLog.read(this.opts.accessDir, tocDigest);
    const files = this.indexFiles(tocDigest);
    const t0 = performance.now();
    // No kept index (a first pull) is known from one access(2): asking a worker would first wait for it to start
    // (~0.1 s here), and the TOC fetch waits for that answer.
    const kept = files
      ? access(files.index).then(() => this.work.loadIndex(files, tocDigest as Digest), () => undefined).catch(() => undefined)
      : Promise.resolve(undefined);
    const source = await this.opts.client.getBlobSource(ref, desc);
    const t1 = performance.now();
    let tree = await kept;
    // Where a warm lookup's time goes: the blob source (registry session) and the kept tree (issue 12 item 3).
    if (tree) this.opts.logger?.debug?.({ ref: ref.string, layer: desc.digest, sourceMs: Math.round(t1 - t0), loadMs: Math.round(performance.now() - t0) }, 'layer tree kept from an earlier run');
    if (!tree) {
      const { signal, deadline } = this.bound();
      const reader = { size: desc.size, read: async (s: number, e: number) => (await source.readRanges([{ start: s, end: e }], signal, deadline))[0]! };
      // Less urgent background work waits meanwhile (BackgroundScheduler.lookupStart); bounded by fetch_timeout.
      const done = this.opts.scheduler?.lookupStart();
      try {
        tree = await this.openToc(ref, desc, reader, files);
      } finally {
        done?.();
      }
    }
    return { source, tree, files, provenBefore, readBefore };
  }

  /** Fetch the TOC and tar-split and build the tree on a worker; a corrupted response is fetched once more. */
  private async openToc(ref: ImageReference, desc: Descriptor, reader: { size: number; read(s: number, e: number): Promise<Buffer> }, files: IndexFiles | undefined): Promise<LayerTree> {
    const what = `${ref.string} layer ${desc.digest}`;
    for (let attempt = 0; ; attempt++) {
      let sections: LayerSections;
      const t0 = performance.now();
      try {
        sections = await readLayerSections(reader, desc.annotations ?? {});
      } catch (err) {
        throw new NotServable((err as TocfsError).code ?? 'TOC_INVALID', `${what}: ${(err as Error).message}`, { cause: err });
      }
      try {
        const t1 = performance.now();
        const { tree } = await this.work.openToc(sections, files);
        // Where a cold lookup's time goes: the TOC's bytes, then their checks and the tree (issue 12 item 3).
        this.opts.logger?.debug?.({ ref: ref.string, layer: desc.digest, fetchMs: Math.round(t1 - t0), processMs: Math.round(performance.now() - t1) }, 'layer TOC read');
        return tree;
      } catch (err) {
        const code = (err as TocfsError).code;
        // Bytes that do not hash to the annotated digest may be a response damaged on the way: one more try.
        if (attempt === 0 && code === 'DIGEST_MISMATCH') continue;
        const why = code === 'WORKER_OUT_OF_MEMORY' ? `its TOC or tar-split is too large to process (${(err as Error).message}); podman pulls it normally` : (err as Error).message;
        throw new NotServable(code ?? 'TOC_INVALID', `${what}: ${why}`, { cause: err });
      }
    }
  }

  /**
   * As soon as an image's manifest is known (its config is still on the way), fetch the TOCs of its zstd:chunked
   * layers: podman will look them all up, and each TOC costs a round trip. Kept until openLayer takes them.
   */
  private fetchTocsEarly(ref: ImageReference, manifest: ImageManifest): void {
    this.work.prewarmToc();
    for (const desc of manifest.layers.slice(0, MAX_EARLY_TOCS)) {
      const id = `${ref.string}\0${desc.digest}`;
      if (layerKind(desc.annotations) !== 'zstd:chunked' || this.layers.has(id) || this.earlyTocs.has(id)) continue;
      const p = this.readToc(ref, desc);
      p.catch(() => { /* reported when the layer is opened */ });
      this.earlyTocs.set(id, p);
    }
  }

  private async openLayer(ref: ImageReference, desc: Descriptor, diffID: Digest, sentinel: boolean, imageHint: Promise<PrefetchHintList>): Promise<LayerData> {
    const id = `${ref.string}\0${desc.digest}`;
    const early = this.earlyTocs.get(id);
    this.earlyTocs.delete(id);
    const { source, tree, files, provenBefore, readBefore } = await (early ?? this.readToc(ref, desc));
    const { tocDigest, diffSize, tocEntries } = tree.meta;
    const name = `${ref.string} layer ${desc.digest}`;
    const access = new AccessLog(this.opts.accessDir, tocDigest, tree);
    const content = new LayerContent(tree, source, this.opts.cache, {
      name, ...(this.opts.readaheadBytes !== undefined ? { readaheadBytes: this.opts.readaheadBytes } : {}),
      ...(this.opts.dirPrefetchBytes !== undefined ? { dirPrefetchBytes: this.opts.dirPrefetchBytes } : {}),
      ...(this.opts.nearbyBytes !== undefined ? { nearbyBytes: this.opts.nearbyBytes } : {}),
      ...(this.opts.nearbyMaxBytes !== undefined ? { nearbyMaxBytes: this.opts.nearbyMaxBytes } : {}),
      ...(this.opts.wholeFileBytes !== undefined ? { wholeFileBytes: this.opts.wholeFileBytes } : {}),
      ...(this.opts.logger ? { logger: this.opts.logger } : {}),
      ...(this.opts.fetchTimeoutMs !== undefined ? { fetchTimeoutMs: this.opts.fetchTimeoutMs } : {}),
      onFirstRead: (node) => access.record(node),
      onRead: (node, first, last) => access.recordChunks(node, first, last),
      ...(this.opts.work ? { work: this.opts.work } : {}), ...(this.opts.stop ? { stop: this.opts.stop } : {}),
      ...(this.opts.onFetch ? { onFetch: this.opts.onFetch } : {}),
    });
    const hinted = this.hintedNodes(ref, desc, tree);
    this.opts.logger?.info({ ref: ref.string, layer: desc.digest, toc: tocDigest, entries: tocEntries, hinted: hinted.length }, 'layer resolved');
    const policy = this.opts.proof ?? 'background';
    const data: LayerData = {
      ref, descriptor: desc, diffID, tocDigest, diffSize, entries: tocEntries, tree, files, content, source,
      isLocal: (d) => this.opts.cache.isLocal(d),
      hintedFiles: hinted.length,
      firstReads: () => access.recorded(),
      firstReadRanges: () => access.recordedRanges(),
      proof: { state: policy === 'off' ? 'off' : sentinel ? 'skipped' : 'pending', ...(sentinel ? { detail: 'sentinel-variant image' } : {}) },
    };
    const proven = await provenBefore;
    // The record must name this TOC too: a blob could hold a second TOC and tar-split that another manifest's
    // annotations point at, and only the proven pair is proven.
    if (data.proof.state === 'pending' && proven?.diffID === diffID && proven.size === diffSize && proven.toc === tocDigest) {
      data.proof = { state: 'proven', detail: 'proven before (blob and TOC digest fix every byte the proof reads)' };
    }
    let prefetcher: (() => Promise<LayerPrefetcher>) | undefined;
    if (this.opts.scheduler) {
      this.opts.scheduler.register(content);
      // The proof needs every byte of the layer: it implies a (paced) background fetch even when that is off.
      if (this.opts.backgroundFetch !== false || data.proof.state === 'pending') {
        // This node's own record of first reads goes first; the image's hints cover what was never read here. An
        // attached hint is awaited by the background work only: lookups and reads never wait for it.
        const scheduler = this.opts.scheduler;
        const first = new FirstReads(tree);
        first.add(access.adopt(await readBefore));
        for (const n of hinted) first.addNode(n);
        content.markReadInPart(first.ranges.keys());
        content.guided = first.nodes.length > 0;
        prefetcher = async () => {
          data.hintedFiles += first.add(await imageHint);
          content.markReadInPart(first.ranges.keys());
          content.guided = first.nodes.length > 0;
          return new LayerPrefetcher(tree, content, scheduler, { firstNodes: first.nodes, firstRanges: first.ranges });
        };
      }
    }
    data.background = this.runBackground(data, prefetcher);
    return data;
  }

  /** The tree nodes of the layer's prefetch hint; a malformed hint is logged and ignored (it only orders fetches). */
  private hintedNodes(ref: ImageReference, desc: Descriptor, tree: LayerTree): number[] {
    try {
      return parsePrefetchHint(desc.annotations).map((p) => nodeAt(tree, p)).filter((n): n is number => n !== undefined);
    } catch (err) {
      this.opts.logger?.warn({ ref: ref.string, layer: desc.digest }, `${ref.string} layer ${desc.digest}: prefetch hint ignored: ${(err as Error).message}`);
      return [];
    }
  }

  /**
   * Background fetch, then the DiffID proof. A proof that does not end in "proven" quarantines the layer, whatever
   * the reason (a mismatch, a CRC or size error, a chunk that fails verification, a tar-split naming a file the
   * tree lacks): only a transient failure (the registry did not deliver, the daemon is stopping) leaves it to a
   * later try. Nothing here throws.
   */
  private async runBackground(data: LayerData, prefetcher?: () => Promise<LayerPrefetcher>): Promise<void> {
    const log = this.opts.logger;
    const what = `${data.ref.string} layer ${data.descriptor.digest}`;
    try {
      if (prefetcher) data.prefetcher = await prefetcher();
      if (data.prefetcher) {
        await data.prefetcher.start();
        log?.info({ ref: data.ref.string, layer: data.descriptor.digest, bytes: data.prefetcher.progress.fetchedBytes }, 'layer fully local');
        this.opts.onLayerLocal?.(data.tree);
      }
    } catch (err) {
      if (data.proof.state === 'pending') data.proof = { state: 'failed', detail: (err as Error).message };
      log?.warn({ ref: data.ref.string, layer: data.descriptor.digest, err: (err as Error).message }, `${what}: background fetch stopped: ${(err as Error).message}`);
      return;
    }
    if (data.proof.state !== 'pending') return;
    data.proof = { state: 'running' };
    let rebuilt: { diffID: Digest; size: number };
    try {
      rebuilt = await this.prove(data);
    } catch (err) {
      const code = (err as TocfsError).code;
      const message = (err as Error).message;
      if (code !== undefined && TRANSIENT_PROOF_ERRORS.has(String(code))) {
        data.proof = { state: 'failed', detail: message };
        log?.warn({ ref: data.ref.string, layer: data.descriptor.digest, err: message }, `${what}: DiffID proof stopped (tried again after a restart): ${message}`);
        return;
      }
      data.proof = { state: 'mismatch', detail: message };
      this.quarantine(data, `${what}: QUARANTINED: its DiffID proof failed: ${message}; the layer's tar cannot be shown to be the one the image config names, so it is no longer served`);
      return;
    }
    if (rebuilt.diffID === data.diffID && rebuilt.size === data.diffSize) {
      data.proof = { state: 'proven' };
      log?.info({ ref: data.ref.string, layer: data.descriptor.digest, diffID: data.diffID }, 'DiffID proven');
      await this.proofs?.record(data.descriptor.digest, { ...rebuilt, toc: data.tocDigest });
      return;
    }
    data.proof = { state: 'mismatch', detail: `rebuilt tar is ${rebuilt.diffID} (${rebuilt.size} bytes)` };
    this.quarantine(data, `${what}: QUARANTINED: its TOC and tar-split rebuild a tar with DiffID ${rebuilt.diffID} (${rebuilt.size} bytes), but the image config says ${data.diffID}; the layer's two views differ, so it is no longer served`);
  }

  private quarantine(data: LayerData, message: string): void {
    data.quarantined = message;
    this.opts.logger?.error({ ref: data.ref.string, layer: data.descriptor.digest, expected: data.diffID }, message);
  }

  /** The proof on the proof worker (nice 19), paced by the scheduler like other background work. */
  private async prove(data: LayerData): Promise<{ diffID: Digest; size: number }> {
    if (!data.files) throw new TocfsError('TARSPLIT_MISSING', 'no index directory to keep the tar-split in');
    const files = data.files;
    const run = (pace: () => Promise<void>) => this.work.prove(data.tree, files.tarSplit, this.opts.cache.disk?.dir, (node, index) => data.content.chunkBytes(node, index), pace);
    // before-use: a lookup waits for the proof, so it neither waits for a quiet filesystem nor pauses.
    return this.opts.scheduler ? this.opts.scheduler.slot(run, this.opts.proof === 'before-use') : run(async () => {});
  }

  /** Forget early TOCs of an image that nobody will open (its config failed, or the layer has no DiffID). */
  private dropEarlyTocs(ref: ImageReference, keep: ReadonlySet<string> = new Set()): void {
    for (const id of this.earlyTocs.keys()) if (id.startsWith(`${ref.string}\0`) && !keep.has(id)) this.earlyTocs.delete(id);
  }

  /** On first sight of an image, open every zstd:chunked layer at once (TOCs fetched early): podman will stat them all. */
  private prefetchTocs(image: ImageState): void {
    const inst = image.instances[0]!;
    const todo = inst.manifest.layers
      .map((desc, i) => ({ desc, diffID: inst.diffIds[i] }))
      .filter((l) => l.diffID && layerKind(l.desc.annotations) === 'zstd:chunked');
    this.dropEarlyTocs(image.ref, new Set(todo.map((l) => `${image.ref.string}\0${l.desc.digest}`)));
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < todo.length) {
        const l = todo[next++]!;
        const sentinel = inst.manifest.layers[0]?.mediaType === MEDIA_TYPE_SENTINEL;
        await this.layerData(image.ref, l.desc, l.diffID!, sentinel, image.hint).catch(() => { /* reported when looked up */ });
      }
    };
    for (let i = 0; i < Math.min(this.opts.prefetchConcurrency ?? 4, todo.length); i++) void worker();
  }

  /**
   * The blob as the registry has it, for podman save/push. Nothing is served before the whole blob was fetched
   * and matched its digest: a verified copy on disk, made once per layer.
   */
  blobFile(data: LayerData): Promise<string> {
    data.blobFile ??= this.copyBlob(data).catch((err: unknown) => {
      delete data.blobFile;
      throw err;
    });
    return data.blobFile;
  }

  private async copyBlob(data: LayerData): Promise<string> {
    await mkdir(this.opts.blobDir, { recursive: true, mode: 0o700 });
    const hex = data.descriptor.digest.slice(7);
    const final = join(this.opts.blobDir, hex);
    const tmp = `${final}.tmp-${process.pid}-${Date.now()}`;
    const fh = await open(tmp, 'w', 0o600);
    const hash = createHash('sha256');
    try {
      const step = 8 << 20;
      for (let at = 0; at < data.descriptor.size; at += step) {
        const end = Math.min(data.descriptor.size, at + step);
        const [buf] = await data.source.readRanges([{ start: at, end }]);
        hash.update(buf!);
        await fh.write(buf!, 0, buf!.length, at);
      }
      await fh.close();
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== data.descriptor.digest) {
        throw new TocfsError('DIGEST_MISMATCH', `${data.ref.string} blob ${data.descriptor.digest}: the registry's bytes hash to ${actual}`);
      }
      await rename(tmp, final);
      return final;
    } catch (err) {
      await fh.close().catch(() => {});
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

const NO_HINT: PrefetchHintList = { paths: [], ranges: new Map() };

/**
 * The files a layer's background fetch brings first, in order, from several hints (this node's record of first
 * reads, the image's hints); for files read only in part, the byte ranges read. A file hinted whole anywhere is
 * fetched whole first.
 */
class FirstReads {
  readonly nodes: number[] = [];
  readonly ranges = new Map<number, [number, number][]>();
  private readonly whole = new Set<number>();

  constructor(private readonly tree: LayerTree) {}

  /** Add a hint's files that are regular files of this tree; returns how many of its files the tree has. */
  add(hint: PrefetchHintList): number {
    let found = 0;
    for (const p of hint.paths) {
      const n = nodeAt(this.tree, p);
      if (n !== undefined && this.addNode(n, hint.ranges.get(p))) found++;
    }
    return found;
  }

  /** Add file `node`, read whole or (with `ranges`) in part; false if it is not a regular file. */
  addNode(n: number, ranges?: readonly [number, number][]): boolean {
    if (!this.tree.isRegular(n)) return false;
    const known = this.whole.has(n) || this.ranges.has(n);
    if (!known) this.nodes.push(n);
    if (!ranges || this.whole.has(n)) {
      this.whole.add(n);
      this.ranges.delete(n);
    } else {
      this.ranges.set(n, [...(this.ranges.get(n) ?? []), ...ranges]);
    }
    return true;
  }
}

/** Chunks of partly read files recorded per layer at most (beyond, files are recorded as read whole). */
const MAX_RECORDED_CHUNKS = 1_000_000;

/**
 * The order in which a layer's files were first read, and which chunks of its multi-chunk files were read, kept
 * per TOC digest (so images sharing the layer share it): the next time the layer is resolved, the background fetch
 * brings those parts first (and, on a warm start, loads them into memory), and `tocfs reads` lists them for hints.
 */
class AccessLog {
  private readonly paths: string[] = [];
  private previous: PrefetchHintList = NO_HINT;
  private readonly seen = new Set<number>();
  /** Chunk indexes read, by node, for files of more than one chunk. */
  private readonly chunks = new Map<number, Set<number>>();
  private chunkCount = 0;
  /** Files whose chunks no longer fit MAX_RECORDED_CHUNKS: recorded as read whole. */
  private readonly wholeOnly = new Set<number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly dir: string | undefined, private readonly tocDigest: string, private readonly tree: LayerTree) {}

  private get file(): string | undefined {
    return AccessLog.fileOf(this.dir, this.tocDigest);
  }

  private static fileOf(dir: string | undefined, tocDigest: string | undefined): string | undefined {
    return dir && isDigest(tocDigest) ? join(dir, `${tocDigest.slice(7)}.json`) : undefined;
  }

  /** What a previous run recorded for the layer with this TOC digest (nothing if none or unreadable). */
  static async read(dir: string | undefined, tocDigest: string | undefined): Promise<PrefetchHintList> {
    const file = AccessLog.fileOf(dir, tocDigest);
    if (!file) return NO_HINT;
    try {
      return parseReadRecord(JSON.parse(await readFile(file, 'utf8')) as unknown);
    } catch {
      return NO_HINT;
    }
  }

  /** Take a previous run's record as this layer's earlier reads. */
  adopt(before: PrefetchHintList): PrefetchHintList {
    const paths = before.paths.filter((p) => nodeAt(this.tree, p) !== undefined);
    this.previous = { paths, ranges: before.ranges };
    return this.previous;
  }

  /** First reads recorded before this run (if this run read nothing yet) or in this run, as absolute paths. */
  recorded(): string[] {
    return this.paths.length > 0 ? [...this.paths] : [...this.previous.paths];
  }

  /** The byte ranges read of the files of recorded() read only in part. */
  recordedRanges(): Record<string, [number, number][]> {
    if (this.paths.length === 0) return Object.fromEntries(this.previous.ranges);
    const out: Record<string, [number, number][]> = {};
    for (const [node, read] of this.chunks) {
      if (read.size < this.tree.chunkCount(node)) out[this.tree.pathOf(node)] = this.byteRanges(node, read);
    }
    return out;
  }

  record(node: number): void {
    if (!this.file || this.seen.has(node) || this.seen.size >= 100_000) return;
    this.seen.add(node);
    this.paths.push(this.tree.pathOf(node));
    this.schedule();
  }

  /** Chunks [first, last] of `node` were read (by a container: not the proof's or the background's reads). */
  recordChunks(node: number, first: number, last: number): void {
    if (!this.file || !this.seen.has(node) || this.tree.chunkCount(node) <= 1 || this.wholeOnly.has(node)) return;
    let read = this.chunks.get(node);
    if (!read) this.chunks.set(node, (read = new Set()));
    for (let i = first; i <= last; i++) {
      if (read.has(i)) continue;
      if (this.chunkCount >= MAX_RECORDED_CHUNKS) {
        // Out of room: the file is recorded as read whole (more than it read, never less).
        this.chunks.delete(node);
        this.wholeOnly.add(node);
        break;
      }
      read.add(i);
      this.chunkCount++;
    }
    this.schedule();
  }

  /** File byte ranges covering the chunks `read` of `node`, consecutive chunks merged. */
  private byteRanges(node: number, read: ReadonlySet<number>): [number, number][] {
    const out: [number, number][] = [];
    // chunkFileRange, not chunk(): no digest string per chunk (this runs at every save, up to once a second).
    for (const i of [...read].sort((a, b) => a - b)) {
      const c = this.tree.chunkFileRange(node, i);
      const last = out[out.length - 1];
      if (last && last[1] === c.start) last[1] = c.end;
      else out.push([c.start, c.end]);
    }
    return out;
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => { this.timer = undefined; void this.save(); }, 1000);
    this.timer.unref();
  }

  private async save(): Promise<void> {
    // Failing only loses a priority hint.
    await writeStateFile(this.file!, JSON.stringify({ paths: this.paths, ranges: this.recordedRanges() })).catch(() => {});
  }
}

/**
 * Passed DiffID proofs, one file per blob digest. The blob digest and the TOC digest (which names the tar-split's
 * digest) fix every byte the proof reads, so "blob X with TOC T rebuilds to DiffID D of N bytes" stays true
 * forever; a restarted daemon trusts it instead of spending seconds of CPU (measured: ~1 s per 256 MiB) beside the
 * containers it serves.
 */
class ProofRecords {
  constructor(private readonly dir: string) {}

  private file(blob: Digest): string {
    return join(this.dir, blob.slice(7));
  }

  /** What an earlier proof of this blob established, if any. */
  async read(blob: Digest): Promise<{ diffID: unknown; size: unknown; toc: unknown } | undefined> {
    try {
      return JSON.parse(await readFile(this.file(blob), 'utf8')) as { diffID: unknown; size: unknown; toc: unknown };
    } catch {
      return undefined;
    }
  }

  async record(blob: Digest, proven: { diffID: Digest; size: number; toc: string }): Promise<void> {
    // Failing only costs a second proof after the next restart.
    await writeStateFile(this.file(blob), JSON.stringify({ diffID: proven.diffID, size: proven.size, toc: proven.toc })).catch(() => {});
  }
}

