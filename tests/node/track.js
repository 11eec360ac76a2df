'use strict';
// Every TrackClient method that speaks Track API v1 (plus the unauthenticated /unsubscribe), and the
// APIClient reads Tidings serves, grouped into scenarios: node track.js <scenario>.

const { main } = require('./lib');

const scenarios = {
  async people({ track, step }) {
    await step('getAccountRegion', () => track.getAccountRegion());
    await step('identify', () =>
      track.identify('n-1', {
        email: 'N.One@example.com',
        plan: 'pro',
        created_at: 1600000000,
        address: { city: 'Oslo' },
      }),
    );
    await step('identify.update', () => track.identify('n-1', { plan: 'team', address: null }));
    await step('identify.byEmail', () => track.identify('n2@example.com', { first_name: 'Nia' }));
    await step('identify.escaped', () => track.identify('team/a b+c?d', { role: 'owner' }));
    await step('identify.relationships', () =>
      track.identify('n-1', {
        cio_relationships: {
          action: 'add_relationships',
          relationships: [
            {
              identifiers: { object_type_id: '1', object_id: 'acme' },
              relationship_attributes: { role: 'admin' },
            },
          ],
        },
      }),
    );
    await step('identify.doomed', () => track.identify('n-gone', { email: 'gone@example.com' }));
    await step('destroy', () => track.destroy('n-gone'));
  },

  async events({ track, step }) {
    const body = { name: 'purchase', id: '01HZY3V6M9J5R8QK2T4W6X8Y0Z', timestamp: 1714564800, data: { price: 9 } };
    await step('track', () => track.track('n-ev', body));
    await step('track.repeat', () => track.track('n-ev', body));
    await step('track.screen', () => track.track('n-ev', { name: 'Home', type: 'screen', data: { tab: 'feed' } }));
    await step('trackPageView', () => track.trackPageView('n-ev', '/pricing'));
    await step('trackAnonymous', () => track.trackAnonymous('anon-n', { name: 'viewed', data: { plan: 'pro' } }));
    await step('identify.anonymous', () => track.identify('n-anon', { anonymous_id: 'anon-n' }));
    await step('trackAnonymous.invite', () =>
      track.trackAnonymous('', { name: 'invite', data: { recipient: 'friend@example.com' } }),
    );
  },

  async devices({ track, step }) {
    // customerio-node sends last_used at device level and every other key under device.attributes.
    await step('addDevice', () =>
      track.addDevice('n-dev', 'tok-ios', 'ios', { last_used: 1700000000, app_version: '2.0', push_enabled: 'true' }),
    );
    await step('addDevice.second', () => track.addDevice('n-dev', 'fcm:tok/2+x', 'android'));
    await step('deleteDevice', () => track.deleteDevice('n-dev', 'fcm:tok/2+x'));
  },

  async merge({ track, api, step }) {
    await step('identify.primary', () => track.identify('n-primary', { email: 'nprimary@example.com', tier: 'gold' }));
    await step('identify.sec1', () => track.identify('n-sec-1', { email: 'nsec1@example.com', city: 'Oslo' }));
    await step('identify.sec2', () => track.identify('nsec2@example.com', { language: 'nb' }));
    await step('identify.sec3', () => track.identify('n-sec-3', { team: 'blue' }));
    await step('track.sec1', () => track.track('n-sec-1', { name: 'signed_up' }));
    const primary = await step('getAttributes.primary', () => api.getAttributes('n-primary'));
    const sec2 = await step('getAttributes.sec2', () => api.getAttributes('nsec2@example.com', 'email'));
    const primaryCio = primary && primary.customer.identifiers.cio_id;
    const sec2Cio = sec2 && sec2.customer.identifiers.cio_id;
    await step('mergeCustomers.idEmail', () => track.mergeCustomers('id', 'n-primary', 'email', 'nsec1@example.com'));
    await step('mergeCustomers.emailCioId', () =>
      track.mergeCustomers('email', 'nprimary@example.com', 'cio_id', sec2Cio),
    );
    await step('mergeCustomers.cioIdId', () => track.mergeCustomers('cio_id', primaryCio, 'id', 'n-sec-3'));
  },

  async suppression({ track, step }) {
    await step('identify', () => track.identify('n-sup', { email: 'nsup@example.com', plan: 'pro' }));
    await step('suppress', () => track.suppress('n-sup'));
    await step('identify.refused', () => track.identify('n-sup', { plan: 'free' }));
    await step('identify.refusedEmail', () => track.identify('n-other', { email: 'nsup@example.com' }));
    await step('track.refused', () => track.track('n-sup', { name: 'came_back' }));
    await step('unsuppress', () => track.unsuppress('n-sup'));
    await step('identify.again', () => track.identify('n-sup', { email: 'nsup@example.com', plan: 'free' }));
  },

  async segments({ track, api, step }) {
    const created = await step('createSegment', () =>
      api.createSegment({ name: 'Node VIP', description: 'made by customerio-node' }),
    );
    const id = created && created.segment.id;
    await step('identify.s1', () => track.identify('n-s1', {}));
    await step('identify.s2', () => track.identify('n-s2', {}));
    await step('identify.s3', () => track.identify('n-s3', { email: 'ns3@example.com' }));
    await step('addCustomersToSegment', () => track.addCustomersToSegment(id, ['n-s1', 'n-s2', 'nobody']));
    await step('addCustomersToSegment.email', () => track.addCustomersToSegment(id, ['ns3@example.com'], 'email'));
    await step('removeCustomersFromSegment', () => track.removeCustomersFromSegment(id, ['n-s2']));
    await step('getSegmentCustomerCount', () => api.getSegmentCustomerCount(id));
    await step('getSegment', () => api.getSegment(id));
    await step('listSegments', () => api.listSegments());
    const temp = await step('createSegment.temp', () => api.createSegment({ name: 'Temporary' }));
    await step('deleteSegment', () => api.deleteSegment(temp && temp.segment.id));
  },

  // Needs DELIVERY_ID: a delivery of the person "n-unsub" (deliveries are made by the messaging layer).
  async deliveries({ track, step, env }) {
    const deliveryId = env('DELIVERY_ID');
    await step('submitForm', () => track.submitForm('newsletter', { email: 'lead@example.com', first_name: 'Lee' }));
    await step('trackPush', () =>
      track.trackPush({ delivery_id: deliveryId, event: 'opened', device_id: 'tok-push', timestamp: 1700000000 }),
    );
    await step('reportMetric', () =>
      track.reportMetric({
        delivery_id: deliveryId,
        metric: 'clicked',
        href: 'https://example.com/offer',
        timestamp: 1700000001,
      }),
    );
    await step('unsubscribe', () => track.unsubscribe(deliveryId));
  },

  async reads({ track, api, step }) {
    await step('identify', () =>
      track.identify('n-app', {
        email: 'napp@example.com',
        plan: 'pro',
        cio_relationships: {
          relationships: [{ identifiers: { object_type_id: '1', object_id: 'acme' }, relationship_attributes: { role: 'owner' } }],
        },
      }),
    );
    await step('track', () => track.track('n-app', { name: 'logged_in', data: { via: 'sso' } }));
    await step('getCustomersByEmail', () => api.getCustomersByEmail('NApp@example.com'));
    await step('getAttributes', () => api.getAttributes('n-app'));
    await step('getAttributes.email', () => api.getAttributes('napp@example.com', 'email'));
    await step('getAttributes.unknown', () => api.getAttributes('nobody'));
    await step('getCustomersAttributes', () => api.getCustomersAttributes(['n-app', 'nobody']));
    await step('getCustomerActivities', () => api.getCustomerActivities('n-app', { type: 'event' }));
    await step('getCustomerRelationships', () => api.getCustomerRelationships('n-app'));
    await step('listObjectTypes', () => api.listObjectTypes());
    await step('getObjectAttributes', () => api.getObjectAttributes('1', 'acme'));
    await step('getObjectRelationships', () => api.getObjectRelationships('1', 'acme'));
    await step('listWorkspaces', () => api.listWorkspaces());
  },
};

main(scenarios).catch((error) => {
  process.stderr.write(`${(error && error.stack) || error}\n`);
  process.exit(1);
});
