// Drives npm's write-file-atomic the way its README shows (writeFileAtomic.sync,
// fsync on by default). Usage: node bench.js replace FILE N SIZE | rmw FILE N ID
const wfa = require('write-file-atomic');
const fs = require('fs');
const [mode, file, nArg, extra] = process.argv.slice(2);
const n = Number(nArg);
function doc(size, seq) {
  const k = Math.max(1, Math.floor(size / 64));
  const items = [];
  for (let i = 0; i < k; i++) items.push({ id: i, name: 'item-' + String(i).padStart(6, '0'), ok: i % 3 === 0 });
  return { seq, updated: `2026-11-24T00:00:${String(seq % 60).padStart(2, '0')}Z`, items };
}
if (mode === 'replace') {
  const size = Number(extra);
  const lat = [];
  let total = 0;
  // n untimed writes first: the timed ones meet a steady state (see statefile-bench).
  for (let i = 0; i < 2 * n; i++) {
    const s = JSON.stringify(doc(size, i), null, 2) + '\n';
    const t = process.hrtime.bigint();
    wfa.sync(file, s);
    const us = Number(process.hrtime.bigint() - t) / 1000;
    if (i < n) continue;
    lat.push(us);
    total += us;
  }
  lat.sort((a, b) => a - b);
  let correct = false;
  try { correct = JSON.parse(fs.readFileSync(file, 'utf8')).seq === 2 * n - 1; } catch (e) { correct = false; }
  console.log(JSON.stringify({
    lat: { ops: n, total: total / 1e6, p50_us: lat[Math.floor(n * 0.5)], p99_us: lat[Math.min(n - 1, Math.floor(n * 0.99))] },
    correct, peak_kb: process.resourceUsage().maxRSS,
  }));
} else {
  for (let i = 0; i < n; i++) {
    let v;
    try { v = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { v = { items: [] }; }
    v.items.push(`${extra}-0-${i}`);
    try { wfa.sync(file, JSON.stringify(v)); } catch (e) { /* a racing writer: this update is lost */ }
  }
  console.log('{"ok": true}');
}
