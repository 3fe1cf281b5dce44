// The explorer's source of records: a log's public C2SP tlog-tiles entry
// bundles, read backwards from the latest checkpoint, filtered here.
//
// query() has the shape a server-side filter endpoint would answer
// (`GET /logs/{log}/records?agency=&type=&since=&until=&before=&limit=` →
// `{ records: [{ index, leaf }], next }`, newest first, `next` the `before`
// of the following page or null), so such an endpoint can replace the scan
// without touching the page. Either way the page checks every record it shows
// with its own inclusion proof; a source only decides which records to show.
//
// No DOM; fetching is injected, so this also runs under Node.

/** Entries per bundle (C2SP tlog-tiles). */
export const BUNDLE_WIDTH = 256;

/** The tlog-tiles path element of a tile index: 1234067 → x001/x234/067. */
export function tileIndexPath(n) {
  let s = String(n);
  while (s.length % 3) s = '0' + s;
  const parts = s.match(/.{3}/g);
  return parts.map((p, i) => (i < parts.length - 1 ? `x${p}` : p)).join('/');
}

/** The path of entry bundle `k` of a tree of `size` (partial if it is the last, incomplete one). */
export function bundlePath(k, size) {
  const full = Math.floor(size / BUNDLE_WIDTH);
  const w = k < full ? BUNDLE_WIDTH : size % BUNDLE_WIDTH;
  return `tile/entries/${tileIndexPath(k)}${w === BUNDLE_WIDTH ? '' : `.p/${w}`}`;
}

/** The leaves of an entry bundle: big-endian u16 length, then the bytes, repeated. */
export function parseBundle(bytes, expected) {
  const leaves = [];
  let i = 0;
  while (i < bytes.length) {
    if (i + 2 > bytes.length) throw new Error('truncated entry bundle');
    const n = (bytes[i] << 8) | bytes[i + 1];
    i += 2;
    if (i + n > bytes.length) throw new Error('truncated entry bundle');
    leaves.push(bytes.subarray(i, i + n));
    i += n;
  }
  if (expected !== undefined && leaves.length !== expected) throw new Error(`entry bundle holds ${leaves.length} entries, not ${expected}`);
  return leaves;
}

const dec = new TextDecoder();

/**
 * A record's fields from its leaf (the canonical JSON the records layer
 * writes), or null for a leaf that is not a record.
 */
export function parseRecord(leafText) {
  let r;
  try {
    r = JSON.parse(leafText);
  } catch {
    return null;
  }
  if (!r || typeof r !== 'object' || r.v !== 1 || typeof r.agency !== 'string' || typeof r.type !== 'string' || typeof r.ts !== 'string') {
    return null;
  }
  return r;
}

/** Whether `rec` (parsed) passes the filter `{ agency, type, since, until }` (times as Date). */
export function matches(rec, f) {
  if (!rec) return !f.agency && !f.type && !f.since && !f.until;
  if (f.agency && rec.agency !== f.agency) return false;
  if (f.type && !(rec.type === f.type || (f.type.endsWith('.*') && rec.type.startsWith(f.type.slice(0, -1))))) return false;
  const ts = Date.parse(rec.ts);
  if (f.since && !(ts >= f.since.getTime())) return false;
  if (f.until && !(ts <= f.until.getTime())) return false;
  return true;
}

/**
 * Records of the tree of `size` at `base` (the log's URL prefix), read from
 * its entry bundles with `fetchBytes(url) → Uint8Array`.
 */
export class TileSource {
  constructor(base, size, fetchBytes) {
    this.base = base;
    this.size = size;
    this.fetchBytes = fetchBytes;
    this.bundles = new Map();
    this.fetched = 0;
  }

  async bundle(k) {
    let b = this.bundles.get(k);
    if (!b) {
      const full = Math.floor(this.size / BUNDLE_WIDTH);
      const width = k < full ? BUNDLE_WIDTH : this.size % BUNDLE_WIDTH;
      b = this.fetchBytes(`${this.base}/${bundlePath(k, this.size)}`).then((bytes) => parseBundle(bytes, width));
      this.bundles.set(k, b);
      b.catch(() => this.bundles.delete(k));
      this.fetched++;
    }
    return b;
  }

  async entry(index) {
    const leaves = await this.bundle(Math.floor(index / BUNDLE_WIDTH));
    const bytes = leaves[index % BUNDLE_WIDTH];
    const leaf = dec.decode(bytes);
    return { index, bytes, leaf, record: parseRecord(leaf) };
  }

  /** Exclusive upper bound of the entries at or before `until`: timestamps never decrease along the log. */
  async untilBound(until) {
    const t = until.getTime();
    const n = Math.ceil(this.size / BUNDLE_WIDTH);
    // The first bundle whose first record is later than `until`.
    let lo = 0;
    let hi = n;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const first = await this.entry(mid * BUNDLE_WIDTH);
      if (!first.record) return this.size; // not a record log: scan it all
      if (Date.parse(first.record.ts) > t) hi = mid;
      else lo = mid + 1;
    }
    return Math.min(this.size, lo * BUNDLE_WIDTH);
  }

  /**
   * Up to `limit` records matching `filter`, newest first, below index
   * `before` (default: the tree size). `{ records, next, scanned }`.
   */
  async query(filter, { before = this.size, limit = 20 } = {}) {
    let i = Math.min(before, this.size) - 1;
    if (filter.until) i = Math.min(i, (await this.untilBound(filter.until)) - 1);
    const records = [];
    let scanned = 0;
    let next = null;
    const since = filter.since ? filter.since.getTime() : null;
    while (i >= 0) {
      const e = await this.entry(i);
      scanned++;
      if (since !== null && e.record && Date.parse(e.record.ts) < since) break; // older ones are older still
      if (matches(e.record, filter)) {
        if (records.length === limit) {
          next = i + 1;
          break;
        }
        records.push(e);
      }
      i--;
    }
    return { records, next, scanned };
  }
}
