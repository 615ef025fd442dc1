// The real frontend SDK (unleash-proxy-client) in a real browser (Debian's Chromium, driven by
// playwright-core) against a running flagpost, from a page served by this script on another
// origin. Started by the integration test `browser::a_real_browser_page_uses_flagpost`, which
// reads one JSON object per line on stdout and writes "go" lines on stdin when it has changed
// something:
//   {"phase":"ready", "origin", "flags"}   the page shows the flags flagpost evaluated
//   (test changes the features file, writes "go")
//   {"phase":"updated", "flags"}           the SDK's update event fired, the page shows it
//   {"phase":"sent"}                       the SDK sent its usage metrics to flagpost
//   {"phase":"blocked", "error"}           against a flagpost allowing another origin only,
//                                          the browser blocked the answer, the SDK reported it
//   {"phase":"done", "screenshot"}

import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing ${name}`);
  return v;
};
const FLAGPOST = env('FLAGPOST_URL');
const RESTRICTED = env('RESTRICTED_URL');
const TOKEN = env('FRONTEND_TOKEN');
const SCREENSHOT = env('SCREENSHOT');
const say = (o) => console.log(JSON.stringify(o));
// The iterator buffers lines that arrive before they are awaited.
const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const nextLine = () => lines.next();

const sdk = fs.readFileSync(new URL('./node_modules/unleash-proxy-client/build/main.min.js', import.meta.url));
const page = (url) => `<!doctype html>
<html><head><meta charset="utf-8"><title>flagpost in a browser</title>
<style>body{font:16px system-ui;margin:2em} li.on{color:#080} li.off{color:#888}</style>
<script src="/sdk.js"></script></head>
<body><h1>Flags for alice</h1><p id="status">starting</p><ul id="flags"></ul>
<p>updates: <span id="updates">0</span>, metrics sent: <span id="sent">0</span></p>
<p id="error"></p>
<script>
  const client = new unleash.UnleashClient({
    url: ${JSON.stringify(url + '/api/frontend')},
    clientKey: ${JSON.stringify(TOKEN)},
    appName: 'browser-test',
    refreshInterval: 1,
    metricsInterval: 1,
    metricsIntervalInitial: 1,
    context: { userId: 'alice' },
  });
  const render = () => {
    const list = document.getElementById('flags');
    list.innerHTML = '';
    for (const t of client.getAllToggles()) {
      const li = document.createElement('li');
      li.className = t.enabled ? 'on' : 'off';
      li.textContent = t.name + ': ' + (t.enabled ? 'on' : 'off') + ' (' + t.variant.name + ')';
      list.appendChild(li);
    }
    // Count an evaluation, so there is usage to send.
    client.isEnabled('d.on');
  };
  client.on('ready', () => { document.getElementById('status').textContent = 'ready'; render(); });
  client.on('update', () => {
    const n = document.getElementById('updates');
    n.textContent = String(Number(n.textContent) + 1);
    render();
  });
  client.on('sent', () => {
    const n = document.getElementById('sent');
    n.textContent = String(Number(n.textContent) + 1);
  });
  client.on('error', (e) => {
    document.getElementById('error').textContent = 'error: ' + (e && (e.type || e.message) || e);
  });
  client.start();
</script></body></html>`;

const server = http.createServer((req, res) => {
  if (req.url === '/sdk.js') {
    res.writeHead(200, { 'content-type': 'text/javascript' });
    return res.end(sdk);
  }
  const target = req.url.startsWith('/restricted') ? RESTRICTED : FLAGPOST;
  res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
  res.end(page(target));
});
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const origin = `http://127.0.0.1:${server.address().port}`;

const userData = fs.mkdtempSync(path.join(os.tmpdir(), 'flagpost-chromium-'));
const context = await chromium.launchPersistentContext(userData, {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
});
const flags = (p) => p.$$eval('#flags li', (items) => items.map((i) => i.textContent));
try {
  const p = await context.newPage();
  await p.goto(`${origin}/`);
  await p.waitForFunction(() => document.getElementById('status').textContent === 'ready', null, { timeout: 15000 });
  say({ phase: 'ready', origin, flags: await flags(p) });

  const before = await p.$eval('#updates', (e) => Number(e.textContent));
  await nextLine(); // the test changed the features file
  await p.waitForFunction((n) => Number(document.getElementById('updates').textContent) > n, before, { timeout: 15000 });
  say({ phase: 'updated', flags: await flags(p) });

  await p.waitForFunction(() => Number(document.getElementById('sent').textContent) > 0, null, { timeout: 15000 });
  say({ phase: 'sent' });
  await p.screenshot({ path: SCREENSHOT, fullPage: true });

  const blocked = await context.newPage();
  const consoleErrors = [];
  blocked.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await blocked.goto(`${origin}/restricted`);
  await blocked.waitForFunction(() => document.getElementById('error').textContent !== '', null, { timeout: 15000 });
  say({
    phase: 'blocked',
    error: await blocked.$eval('#error', (e) => e.textContent),
    status: await blocked.$eval('#status', (e) => e.textContent),
    flags: await flags(blocked),
    cors: consoleErrors.some((e) => /CORS|Access-Control-Allow-Origin/i.test(e)),
  });
  say({ phase: 'done', screenshot: SCREENSHOT });
} finally {
  await context.close();
  server.close();
  fs.rmSync(userData, { recursive: true, force: true });
}
process.exit(0);
