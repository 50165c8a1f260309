// How GraphiQL reaches the server: HTTP for queries and mutations, one graphql-ws
// client (graphql-transport-ws) for subscriptions. Both read the current token when
// they send, so a refreshed token is used at once; the socket, which the server
// closes with 4403 when the token it opened with expires, reconnects with the new one
// and graphql-ws resubscribes.
import { createGraphiQLFetcher } from '@graphiql/toolkit';
import { createClient } from 'graphql-ws';

export const SCHEMA_GENERATION_HEADER = 'x-kalamdb-schema-generation';

/**
 * `headers()` gives the credentials to send; `onGeneration(g)` hears the schema
 * generation of every HTTP response, which changes when DDL changes the schema.
 */
export function connect(headers, onGeneration) {
  const url = new URL('/v1/graphql', window.location.href).href;
  const wsClient = createClient({
    url: url.replace(/^http/, 'ws'),
    lazy: true,
    retryAttempts: 5,
    connectionParams: () => ({ headers: headers() }),
  });
  const fetchWithCredentials = async (input, init = {}) => {
    const all = new Headers(init.headers);
    for (const [name, value] of Object.entries(headers())) {
      // a header set in GraphiQL's header editor wins
      if (!all.has(name)) all.set(name, value);
    }
    const res = await fetch(input, { ...init, headers: all });
    const generation = res.headers.get(SCHEMA_GENERATION_HEADER);
    if (generation) onGeneration(generation);
    return res;
  };
  const fetcher = createGraphiQLFetcher({
    url,
    wsClient,
    fetch: fetchWithCredentials,
    enableIncrementalDelivery: false,
  });
  /** One small query, for the default query and for the schema-generation check. */
  const query = async (text) => {
    const res = await fetchWithCredentials(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
      body: JSON.stringify({ query: text }),
    });
    const body = await res.json();
    if (body.errors?.length) throw new Error(body.errors[0].message);
    return body.data;
  };
  return { fetcher, query, dispose: () => wsClient.dispose() };
}
