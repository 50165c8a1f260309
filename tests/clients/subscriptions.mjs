// Subscriptions through real clients: Apollo Client with GraphQLWsLink and urql with
// subscriptionExchange (both over graphql-ws's graphql-transport-ws), and a legacy
// subscriptions-transport-ws client (the old graphql-ws protocol). Each sees a live
// update caused by a mutation sent over HTTP.
import { ApolloClient, InMemoryCache, gql } from '@apollo/client';
import { GraphQLWsLink } from '@apollo/client/link/subscriptions';
import { Client, subscriptionExchange } from '@urql/core';
import { createClient } from 'graphql-ws';
import { SubscriptionClient } from 'subscriptions-transport-ws';
import WebSocket from 'ws';
import { check, graphqlUrl, login, main } from './common.mjs';

const wsUrl = graphqlUrl.replace(/^http/, 'ws');

// Resolves with the first value that `test` accepts, fails after `ms`.
function waiter(ms = 10000) {
  let pending = [];
  const seen = [];
  return {
    push(v) {
      seen.push(v);
      pending = pending.filter(({ test, resolve }) => (test(v) ? (resolve(v), false) : true));
    },
    until(test, what) {
      const hit = seen.find(test);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        pending.push({ test, resolve });
        setTimeout(() => reject(new Error(`timed out waiting for ${what}; saw ${JSON.stringify(seen)}`)), ms);
      });
    },
  };
}

async function insert(token, title) {
  const res = await fetch(graphqlUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: 'mutation($t: String!) { insert_app_notes_one(object: { title: $t }) { id } }',
      variables: { t: title },
    }),
  });
  const body = await res.json();
  check(res.status === 200 && !body.errors, `insert: ${JSON.stringify(body)}`);
}

main(async () => {
  const token = await login();

  // Apollo Client, live query
  const apolloWs = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${token}` },
    retryAttempts: 0,
  });
  const apollo = new ApolloClient({ link: new GraphQLWsLink(apolloWs), cache: new InMemoryCache() });
  const apolloSeen = waiter();
  const apolloSub = apollo
    .subscribe({ query: gql`subscription { app_notes(order_by: [{ title: asc }]) { id title } }` })
    .subscribe({ next: (r) => apolloSeen.push(r.data), error: (e) => apolloSeen.push({ error: String(e) }) });
  await apolloSeen.until((d) => Array.isArray(d?.app_notes), 'the first Apollo result');
  await insert(token, 'seen by apollo');
  await apolloSeen.until((d) => d?.app_notes?.some((n) => n.title === 'seen by apollo'), 'the Apollo update');
  apolloSub.unsubscribe();
  await apolloWs.dispose();

  // urql, change feed
  const urqlWs = createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { headers: { Authorization: `Bearer ${token}` } },
    retryAttempts: 0,
  });
  const urql = new Client({
    url: graphqlUrl,
    exchanges: [
      subscriptionExchange({
        forwardSubscription(request) {
          const input = { ...request, query: request.query || '' };
          return { subscribe: (sink) => ({ unsubscribe: urqlWs.subscribe(input, sink) }) };
        },
      }),
    ],
  });
  const urqlSeen = waiter();
  const { unsubscribe } = urql
    .subscription(`subscription { app_notes_changes(initial_batch_size: 10) { op row { title } } }`, {})
    .subscribe((r) => urqlSeen.push(r.error ? { error: String(r.error) } : r.data));
  await urqlSeen.until((d) => d?.app_notes_changes?.every((e) => e.op === 'SNAPSHOT'), 'the urql snapshot');
  await insert(token, 'seen by urql');
  const ev = await urqlSeen.until(
    (d) => d?.app_notes_changes?.some((e) => e.op === 'INSERT' && e.row.title === 'seen by urql'),
    'the urql INSERT event',
  );
  check(ev.app_notes_changes.length >= 1, 'an event list');
  unsubscribe();
  await urqlWs.dispose();

  // subscriptions-transport-ws, the legacy protocol
  const legacy = new SubscriptionClient(
    wsUrl,
    { connectionParams: { authorization: `Bearer ${token}` }, reconnect: false, lazy: false },
    WebSocket,
  );
  const legacySeen = waiter();
  const legacySub = legacy
    .request({ query: 'subscription { app_notes(where: { title: { _like: "%legacy%" } }) { title } }' })
    .subscribe({ next: (r) => legacySeen.push(r.data ?? { errors: r.errors }), error: (e) => legacySeen.push({ error: String(e) }) });
  await legacySeen.until((d) => Array.isArray(d?.app_notes), 'the first legacy result');
  check(legacy.client.protocol === 'graphql-ws', `legacy protocol is ${legacy.client.protocol}`);
  await insert(token, 'seen by legacy');
  await legacySeen.until((d) => d?.app_notes?.length === 1 && d.app_notes[0].title === 'seen by legacy', 'the legacy update');
  legacySub.unsubscribe();
  legacy.close();

  return { apollo: true, urql: true, legacy: true };
});
