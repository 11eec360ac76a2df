'use strict';
// Every PipelinesClient method (identify, track, page, screen, group, alias, batch), in the default
// permissive mode and with strictMode (X-Strict-Mode: 1). Usage: node pipelines.js <scenario>.

const { main } = require('./lib');

const scenarios = {
  async calls({ pipelines, step }) {
    await step('identify', () =>
      pipelines.identify({ userId: 'p-1', traits: { email: 'P.One@example.com', plan: 'pro', seats: 5 } }),
    );
    await step('track', () =>
      pipelines.track({
        userId: 'p-1',
        event: 'Order Completed',
        properties: { total: 42.5 },
        timestamp: '2024-06-01T09:30:00.000Z',
      }),
    );
    await step('page', () =>
      pipelines.page({ userId: 'p-1', name: 'Pricing', properties: { url: 'https://example.com/pricing' } }),
    );
    await step('screen', () => pipelines.screen({ userId: 'p-1', name: 'Home', properties: { tab: 'feed' } }));
    await step('group', () =>
      pipelines.group({
        userId: 'p-1',
        groupId: 'acme',
        traits: { object_type_id: '1', name: 'Acme', relationshipAttributes: { role: 'admin' } },
      }),
    );
    await step('identify.previous', () => pipelines.identify({ userId: 'p-old', traits: { city: 'Oslo' } }));
    await step('track.previous', () => pipelines.track({ userId: 'p-old', event: 'Signed Up' }));
    await step('alias', () => pipelines.alias({ previousId: 'p-old', userId: 'p-1' }));
    const fixed = { userId: 'p-1', event: 'Deduplicated', messageId: '0f3c8a57-2a9e-4c55-9d1b-7e0e1a2b3c4d' };
    await step('track.messageId', () => pipelines.track(fixed));
    await step('track.messageIdAgain', () => pipelines.track(fixed));
  },

  async batch({ pipelines, step }) {
    await step('batch', () =>
      pipelines.batch([
        { type: 'identify', userId: 'pb-1', traits: { email: 'pb1@example.com', plan: 'pro' } },
        { type: 'track', userId: 'pb-1', event: 'Batched', properties: { n: 1 } },
        { type: 'page', userId: 'pb-1', name: 'Docs', properties: { url: 'https://example.com/docs' } },
        { type: 'screen', userId: 'pb-1', name: 'Settings' },
        { type: 'group', userId: 'pb-1', groupId: 'globex', traits: { name: 'Globex' } },
        { type: 'identify', userId: 'pb-old', traits: { language: 'nb' } },
      ]),
    );
    // alias after the identify it merges, in a request of its own so the order is certain.
    await step('batch.alias', () => pipelines.batch([{ type: 'alias', previousId: 'pb-old', userId: 'pb-1' }]));
  },

  async strict({ pipelines, strictPipelines, pipelinesWithKey, step }) {
    await step('strict.identify', () => strictPipelines.identify({ userId: 'ps-1', traits: { plan: 'pro' } }));
    await step('strict.invalidTraits', () => strictPipelines.identify({ userId: 'ps-bad', traits: 'not-an-object' }));
    await step('strict.wrongKey', () =>
      pipelinesWithKey('not-a-write-key', true).identify({ userId: 'ps-nokey', traits: { plan: 'x' } }),
    );
    await step('permissive.invalidTraits', () => pipelines.identify({ userId: 'ps-bad2', traits: 'not-an-object' }));
    await step('permissive.wrongKey', () =>
      pipelinesWithKey('not-a-write-key', false).identify({ userId: 'ps-nokey2', traits: { plan: 'x' } }),
    );
  },
};

main(scenarios).catch((error) => {
  process.stderr.write(`${(error && error.stack) || error}\n`);
  process.exit(1);
});
