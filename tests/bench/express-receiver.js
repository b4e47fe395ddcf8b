// The webhook receiver most Stripe users write: Express + stripe-node's constructEvent, no storage.
// Usage: SECRET=whsec_… node express-receiver.js PORT
'use strict';
const express = require('express');
const Stripe = require('stripe');

const stripe = new Stripe('sk_test_not_used_for_webhooks');
const secret = process.env.SECRET;
const port = Number(process.argv[2] || 3000);
const app = express();

app.post('/webhooks/stripe', express.raw({ type: 'application/json' }), (req, res) => {
  let event;
  try {
    event = stripe.webhooks.constructEvent(req.body, req.headers['stripe-signature'], secret);
  } catch (err) {
    res.status(400).send(`Webhook Error: ${err.message}`);
    return;
  }
  res.json({ received: true, id: event.id });
});

app.get('/healthz', (_req, res) => res.send('ok\n'));
app.listen(port, '127.0.0.1', () => console.log(`express receiver on 127.0.0.1:${port}`));
