// Real Unleash SDKs against a running flagpost. Started by the integration test
// `sdk::real_sdks_against_flagpost`, which passes the URL and tokens in the environment and
// checks what this script prints (one JSON object on stdout).
//
// - unleash-proxy-client (frontend SDK) with a covered frontend token: becomes ready, and
//   reports what it sees for a few flags; with an uncovered token: gets an error, no flags.
// - unleash-client (server SDK) with a covered client token: synchronises and evaluates the same
//   flags; with an uncovered token: gets an error, no flags.
// Both SDKs send their usage metrics to flagpost before they stop.

import { UnleashClient, EVENTS } from 'unleash-proxy-client';
import { Unleash } from 'unleash-client';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing ${name}`);
  return v;
};
const base = env('FLAGPOST_URL');
const FLAGS = ['simple.on', 'simple.off', 'users.allowlist', 'variants.color', 'constraints.country'];
const CONTEXT = { userId: 'alice', properties: { country: 'NO', appVersion: '1.3.0' } };
const EVALUATIONS = 5;

const within = (ms, what, promise) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)),
  ]);

async function frontend(token) {
  const client = new UnleashClient({
    url: `${base}/api/frontend`,
    clientKey: token,
    appName: 'sdk-frontend-test',
    refreshInterval: 1,
    metricsInterval: 1,
    context: CONTEXT,
  });
  const outcome = await within(10000, 'frontend SDK ready or error', new Promise((resolve) => {
    client.on(EVENTS.READY, () => resolve({ ready: true }));
    client.on(EVENTS.ERROR, (e) => resolve({ ready: false, error: e?.code ?? String(e?.type ?? e) }));
    client.start();
  }));
  const seen = {};
  if (outcome.ready) {
    for (let i = 0; i < EVALUATIONS; i++) {
      for (const flag of FLAGS) {
        seen[flag] = { enabled: client.isEnabled(flag), variant: client.getVariant(flag).name };
      }
    }
    // Let one metrics interval pass so the counts are sent.
    await within(10000, 'frontend metrics sent', new Promise((resolve) => client.on(EVENTS.SENT, resolve)));
  }
  client.stop();
  return { ...outcome, flags: seen, toggles: outcome.ready ? client.getAllToggles().length : 0 };
}

async function server(token) {
  const unleash = new Unleash({
    url: `${base}/api/`,
    appName: 'sdk-server-test',
    instanceId: 'sdk-server-1',
    customHeaders: { Authorization: token },
    refreshInterval: 1000,
    metricsInterval: 1000,
  });
  const outcome = await within(10000, 'server SDK synchronized or error', new Promise((resolve) => {
    unleash.on('synchronized', () => resolve({ ready: true }));
    unleash.on('error', (e) => resolve({ ready: false, error: String(e?.message ?? e) }));
    unleash.on('warn', () => {});
  }));
  const seen = {};
  if (outcome.ready) {
    for (let i = 0; i < EVALUATIONS; i++) {
      for (const flag of FLAGS) {
        seen[flag] = { enabled: unleash.isEnabled(flag, CONTEXT), variant: unleash.getVariant(flag, CONTEXT).name };
      }
    }
    await within(10000, 'server metrics sent', new Promise((resolve) => unleash.on('sent', resolve)));
  }
  const features = outcome.ready ? unleash.getFeatureToggleDefinitions().length : 0;
  unleash.destroy();
  return { ...outcome, flags: seen, features };
}

const result = {
  evaluations: EVALUATIONS,
  frontend: await frontend(env('FRONTEND_TOKEN')),
  frontendUncovered: await frontend(env('UNCOVERED_FRONTEND_TOKEN')),
  server: await server(env('CLIENT_TOKEN')),
  serverUncovered: await server(env('UNCOVERED_CLIENT_TOKEN')),
};
console.log(JSON.stringify(result));
process.exit(0);
