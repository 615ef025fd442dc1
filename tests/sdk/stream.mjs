// The real server SDK (unleash-client) in streaming, delta-polling or polling mode against a running
// flagpost. Started by the integration tests in `sdk.rs`, which read what this prints, one JSON
// object per line:
//   {"phase":"ready", ...}    synchronised: the number of features and FLAG's state
//   {"phase":"changed", ...}  FLAG became EXPECT (after the test changed it upstream)
// The script fails if the SDK warns that it fell back to polling, or times out.

import { Unleash } from 'unleash-client';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing ${name}`);
  return v;
};
const mode = env('MODE');
const flag = env('FLAG');
const expect = env('EXPECT') === 'true';
// "polling": the default full polling, which switches to streaming when told to.
const experimentalMode = {
  streaming: { type: 'streaming' },
  delta: { type: 'polling', format: 'delta' },
  polling: undefined,
}[mode];

const warnings = [];
const unleash = new Unleash({
  url: `${env('FLAGPOST_URL')}/api/`,
  appName: `sdk-${mode}-test`,
  customHeaders: { Authorization: env('CLIENT_TOKEN') },
  refreshInterval: 200,
  disableMetrics: true,
  experimentalMode,
});
unleash.on('warn', (w) => warnings.push(String(w)));
unleash.on('error', (e) => warnings.push(`error: ${e?.message ?? e}`));

const timeout = (ms, what) =>
  setTimeout(() => {
    console.log(JSON.stringify({ phase: 'failed', what, warnings }));
    process.exit(1);
  }, ms);

let t = timeout(15000, 'synchronized');
await new Promise((resolve) => unleash.once('synchronized', resolve));
clearTimeout(t);
const count = () => unleash.getFeatureToggleDefinitions().length;
console.log(JSON.stringify({ phase: 'ready', features: count(), enabled: unleash.isEnabled(flag), warnings }));

t = timeout(15000, `${flag} to become ${expect}`);
const started = Date.now();
await new Promise((resolve) => {
  const check = () => {
    if (unleash.isEnabled(flag) === expect) resolve();
  };
  unleash.on('changed', check);
  check();
});
clearTimeout(t);
const fellBack = warnings.filter((w) => /polling|re-hydration/i.test(w));
console.log(JSON.stringify({ phase: 'changed', features: count(), ms: Date.now() - started, warnings, fellBack }));
unleash.destroy();
process.exit(fellBack.length === 0 ? 0 : 1);
