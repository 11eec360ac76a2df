'use strict';
// Transactional sends with customerio-node's APIClient, and Customer.io's own reporting-webhook signature
// check (verifyRequestSignature) over posts Tidings made: node messaging.js <send|verify>.
//
// send reads NODE_PERSON (a customer id) and NODE_TEMPLATE (a transactional message trigger name).
// verify reads CIO_WEBHOOK_SIGNING_KEY and CIO_WEBHOOK_POSTS (a JSON list of {timestamp, signature, body}).

const { SendEmailRequest, SendSMSRequest, verifyRequestSignature } = require('customerio-node');
const { main } = require('./lib');

const scenarios = {
  async send({ api, env, step }) {
    const person = env('NODE_PERSON');
    await step('sendEmail.template', () =>
      api.sendEmail(
        new SendEmailRequest({
          transactional_message_id: env('NODE_TEMPLATE'),
          identifiers: { id: person },
          to: `${person}@example.com`,
          message_data: { order: { id: 'N-7', total: 42 } },
        }),
      ),
    );
    await step('sendEmail.inline', () =>
      api.sendEmail(
        new SendEmailRequest({
          identifiers: { id: person },
          to: `${person}@example.com`,
          from: 'node@example.com',
          subject: 'Inline from node',
          body: '<p>Hello from <a href="https://example.com/node">node</a></p>',
        }),
      ),
    );
    await step('sendEmail.missingTo', () =>
      api.sendEmail(
        new SendEmailRequest({ identifiers: { id: person }, from: 'node@example.com', subject: 's', body: 'b' }),
      ),
    );
    await step('sendSMS.unknownTemplate', () =>
      api.sendSMS(new SendSMSRequest({ transactional_message_id: 987654, identifiers: { id: person } })),
    );
  },

  async verify({ env, step }) {
    const key = env('CIO_WEBHOOK_SIGNING_KEY');
    const posts = JSON.parse(env('CIO_WEBHOOK_POSTS'));
    await step('valid', async () =>
      posts.map((post) => verifyRequestSignature({ signingSecret: key, ...post })),
    );
    await step('tampered', async () =>
      posts.map((post) => verifyRequestSignature({ signingSecret: key, ...post, body: `${post.body} ` })),
    );
  },
};

main(scenarios);
