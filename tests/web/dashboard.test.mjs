// The Grafana dashboard (deploy/grafana/stele-dashboard.json): well formed,
// and every metric and label its queries use is one a running `stele serve`
// exports: a plain one, and one with a witness policy (three witnesses) for
// the witnessing panels.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { repo, startFederation, startServer } from './helpers.mjs';

const dashboard = JSON.parse(readFileSync(join(repo, 'deploy', 'grafana', 'stele-dashboard.json'), 'utf8'));
let server;
let fed;
let exported; // metric name → Set of label names

before(async () => {
  server = await startServer();
  await server.bulk(server.demoToken, [{ type: 'land.transfer', subject: 'a' }, { type: 'land.transfer', subject: 'b' }]);
  await server.bulk(server.demoToken, [{ type: 'land.transfer', subject: 'a' }]); // a duplicate
  await fetch(`${server.base}/logs/default/entries/999`); // a 404
  fed = await startFederation();
  await fed.submit('w', true);
  const text = (await (await fetch(`${server.base}/metrics`)).text()) + (await (await fetch(`${fed.base}/metrics`)).text());
  exported = new Map();
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})? /.exec(line);
    if (!m) continue;
    const labels = exported.get(m[1]) || new Set();
    for (const l of (m[3] || '').matchAll(/(\w+)="/g)) labels.add(l[1]);
    exported.set(m[1], labels);
  }
});

after(() => {
  if (server) server.stop();
  if (fed) fed.stop();
});

const panels = dashboard.panels.filter((p) => p.type !== 'row');

function queries() {
  const out = panels.flatMap((p) => p.targets.map((t) => ({ where: `panel “${p.title}”`, expr: t.expr, panel: p })));
  for (const v of dashboard.templating.list.filter((v) => v.type === 'query')) out.push({ where: `variable ${v.name}`, expr: v.definition, panel: v });
  return out;
}

test('the dashboard is well formed', () => {
  assert.equal(dashboard.uid, 'stele-overview');
  const ids = dashboard.panels.map((p) => p.id);
  assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
  assert.ok(panels.length >= 15, `${panels.length} panels`);
  // No two panels overlap on the 24-column grid.
  const cells = new Map();
  for (const p of dashboard.panels) {
    const { x, y, w, h } = p.gridPos;
    assert.ok(x >= 0 && w > 0 && x + w <= 24, `${p.title}: gridPos ${JSON.stringify(p.gridPos)}`);
    for (let i = x; i < x + w; i++) {
      for (let j = y; j < y + h; j++) {
        assert.ok(!cells.has(`${i},${j}`), `${p.title} overlaps ${cells.get(`${i},${j}`)}`);
        cells.set(`${i},${j}`, p.title);
      }
    }
  }
  for (const p of panels) {
    assert.deepEqual(p.datasource, { type: 'prometheus', uid: '${datasource}' }, p.title);
    assert.ok(p.description && p.targets.length, p.title);
  }
  for (const title of ['Submissions by outcome', 'Time to receipt', 'Batch size', 'Queue depth', 'Errors by status', 'Tree size', 'Requests by route', 'Witnessed vs signed tree size', 'Witness quorum', 'Requests to witnesses by outcome']) {
    assert.ok(panels.some((p) => p.title === title), `a panel “${title}”`);
  }
});

test('every metric and label the queries use is exported by stele serve', () => {
  const problems = [];
  for (const { where, expr } of queries()) {
    const metrics = [...new Set(expr.match(/\bstele_[a-z_]+\b/g) || [])];
    if (!metrics.length) problems.push(`${where}: no Stele metric in ${expr}`);
    for (const m of metrics) if (!exported.has(m)) problems.push(`${where}: ${m} is not exported`);
    const labels = new Set([
      ...[...expr.matchAll(/\{([^}]*)\}/g)].flatMap((s) => [...s[1].matchAll(/(\w+)\s*(=~|!~|!=|=)/g)].map((l) => l[1])),
      ...[...expr.matchAll(/\bby\s*\(([^)]*)\)/g)].flatMap((b) => b[1].split(',').map((l) => l.trim())),
      ...[...expr.matchAll(/label_values\([^,]+,\s*(\w+)\)/g)].map((l) => l[1]),
    ]);
    for (const l of labels) {
      const on = metrics.filter((m) => exported.get(m)?.has(l));
      if (on.length) continue;
      problems.push(`${where}: label ${l} is on none of ${metrics.join(', ')}`);
    }
  }
  assert.deepEqual(problems, []);
});
