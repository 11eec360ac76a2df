'use strict';
// Campaign data in and API-triggered broadcasts with customerio-node: node campaigns.js <journey|broadcast>.
//
// journey identifies NODE_PERSON and tracks NODE_EVENT for them (an event-triggered campaign's journey).
// broadcast triggers NODE_BROADCAST (a broadcast id) with each recipient style the client knows, naming
// NODE_PEOPLE (comma-separated customer ids whose emails are <id>@example.com).

const { main } = require('./lib');

const scenarios = {
  async journey({ track, env, step }) {
    const person = env('NODE_PERSON');
    await step('identify', () => track.identify(person, { email: `${person}@node.example.com`, first_name: 'Node' }));
    await step('track', () => track.track(person, { name: env('NODE_EVENT'), data: { plan: 'node' } }));
  },

  async broadcast({ api, env, step }) {
    const broadcast = env('NODE_BROADCAST');
    const people = env('NODE_PEOPLE').split(',');
    await step('emails', () =>
      api.triggerBroadcast(broadcast, { headline: 'by email' }, { emails: [`${people[0]}@example.com`] }),
    );
    await step('ids', () => api.triggerBroadcast(broadcast, { headline: 'by id' }, { ids: [people[1]] }));
    await step('perUserData', () =>
      api.triggerBroadcast(broadcast, { headline: 'shared' }, {
        per_user_data: [{ id: people[2], data: { headline: 'personal' } }],
      }),
    );
    await step('filter', () =>
      api.triggerBroadcast(broadcast, { headline: 'by filter' }, {
        attribute: { field: 'node_cohort', operator: 'eq', value: 'yes' },
      }),
    );
    await step('unknownBroadcast', () => api.triggerBroadcast(987654, {}, { ids: [people[0]] }));
  },
};

main(scenarios);
