'use strict';
// TrackClient methods that speak Track API v2: batch() and entity(). customerio-node derives the v2 root by
// replacing /api/v1 with /api/v2 in the configured url. Usage: node track_v2.js <scenario>.

const { main } = require('./lib');

const person = (id) => ({ type: 'person', identifiers: { id } });

const scenarios = {
  async batch({ track, step }) {
    await step('batch', () =>
      track.batch([
        { ...person('v2-1'), action: 'identify', attributes: { email: 'v21@example.com', plan: 'pro' } },
        { ...person('v2-1'), action: 'event', name: 'purchased', attributes: { price: 10 } },
        { ...person('v2-1'), action: 'screen', name: 'Checkout', attributes: { step: 2 } },
        {
          ...person('v2-1'),
          action: 'add_device',
          device: { token: 'tok-v2', platform: 'ios', last_used: 1700000000, attributes: { app_version: '5' } },
        },
        {
          type: 'object',
          action: 'identify',
          identifiers: { object_type_id: '1', object_id: 'umbrella' },
          attributes: { name: 'Umbrella' },
          cio_relationships: [{ identifiers: { id: 'v2-1' }, relationship_attributes: { role: 'buyer' } }],
        },
        { ...person('v2-2'), action: 'identify', attributes: { city: 'Oslo' } },
        { ...person('v2-gone'), action: 'identify', attributes: { plan: 'trial' } },
      ]),
    );
    await step('batch.second', () =>
      track.batch([
        { type: 'person', action: 'merge', primary: { id: 'v2-1' }, secondary: { id: 'v2-2' } },
        { ...person('v2-1'), action: 'delete_device', device: { token: 'tok-v2' } },
        { ...person('v2-gone'), action: 'delete' },
      ]),
    );
    // One bad item: 207 with its batch_index; customerio-node resolves any 2xx with the parsed body.
    await step('batch.partial', () =>
      track.batch([
        { ...person('v2-ok'), action: 'identify', attributes: { a: 1 } },
        { ...person('v2-ok'), action: 'event' },
      ]),
    );
  },

  async entity({ track, step }) {
    await step('entity.identify', () =>
      track.entity({ ...person('v2-e'), action: 'identify', attributes: { email: 've@example.com', plan: 'pro' } }),
    );
    await step('entity.event', () =>
      track.entity({ ...person('v2-e'), action: 'event', name: 'upgraded', attributes: { to: 'team' } }),
    );
    await step('entity.page', () =>
      track.entity({ ...person('v2-e'), action: 'page', name: '/billing', attributes: { title: 'Billing' } }),
    );
    await step('entity.object', () =>
      track.entity({
        type: 'object',
        action: 'identify',
        identifiers: { object_type_id: '1', object_id: 'initech' },
        attributes: { name: 'Initech' },
      }),
    );
    await step('entity.addRelationships', () =>
      track.entity({
        ...person('v2-e'),
        action: 'add_relationships',
        cio_relationships: [
          { identifiers: { object_type_id: '1', object_id: 'initech' }, relationship_attributes: { seat: 'admin' } },
        ],
      }),
    );
    await step('entity.suppress', () => track.entity({ ...person('v2-s'), action: 'suppress' }));
    await step('identify.refused', () => track.identify('v2-s', { plan: 'pro' }));
    await step('entity.unsuppress', () => track.entity({ ...person('v2-s'), action: 'unsuppress' }));
    await step('identify.again', () => track.identify('v2-s', { plan: 'pro' }));
    await step('entity.invalid', () => track.entity({ ...person('v2-e'), action: 'teleport' }));
  },
};

main(scenarios).catch((error) => {
  process.stderr.write(`${(error && error.stack) || error}\n`);
  process.exit(1);
});
