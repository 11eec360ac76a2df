'use strict';
// Shared by the scripts that drive Tidings with Customer.io's official Node client (customerio-node).
// Configuration comes from the environment; every client call runs as a named step whose outcome (the
// resolved value, or the error) goes into one JSON report on stdout, which tests/clients/test_node_clients.py
// asserts on.
//
// Environment: TIDINGS_URL (origin, e.g. http://127.0.0.1:8080), CIO_SITE_ID, CIO_TRACK_API_KEY,
// CIO_APP_API_KEY, CIO_PIPELINES_WRITE_KEY; scenarios may read more (documented where they do).

const { TrackClient, APIClient, PipelinesClient } = require('customerio-node');

function env(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`environment variable ${name} is required`);
  }
  return value;
}

function clients() {
  const base = env('TIDINGS_URL').replace(/\/+$/, '');
  const writeKey = env('CIO_PIPELINES_WRITE_KEY');
  // The only change a team makes to point these clients at Tidings: the base URL.
  return {
    base,
    env,
    track: new TrackClient(env('CIO_SITE_ID'), env('CIO_TRACK_API_KEY'), { url: `${base}/api/v1` }),
    api: new APIClient(env('CIO_APP_API_KEY'), { url: `${base}/v1` }),
    pipelines: new PipelinesClient(writeKey, { url: `${base}/v1` }),
    strictPipelines: new PipelinesClient(writeKey, { url: `${base}/v1`, strictMode: true }),
    pipelinesWithKey: (key, strictMode) => new PipelinesClient(key, { url: `${base}/v1`, strictMode }),
  };
}

function describe(error) {
  return {
    name: (error && error.name) || 'Error',
    message: String((error && error.message) || error),
    statusCode: (error && error.statusCode) || null,
    body: (error && error.body) || null,
  };
}

function recorder() {
  const steps = {};
  async function step(name, call) {
    if (Object.prototype.hasOwnProperty.call(steps, name)) {
      throw new Error(`step ${name} is recorded twice`);
    }
    try {
      const value = await call();
      steps[name] = { ok: true, value: value === undefined ? null : value };
      return value;
    } catch (error) {
      steps[name] = { ok: false, error: describe(error) };
      return undefined;
    }
  }
  return { steps, step };
}

// Runs the scenario named by the first argument and prints {"scenario", "steps"} as one JSON line.
async function main(scenarios) {
  const name = process.argv[2];
  if (!Object.prototype.hasOwnProperty.call(scenarios, name)) {
    process.stderr.write(`usage: node ${process.argv[1]} <${Object.keys(scenarios).join('|')}>\n`);
    process.exit(2);
  }
  const { steps, step } = recorder();
  await scenarios[name]({ ...clients(), step });
  process.stdout.write(`${JSON.stringify({ scenario: name, steps })}\n`);
}

module.exports = { main };
