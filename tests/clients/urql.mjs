// urql against the real server: log in, mutate, query, and see an error's code.
import { Client, fetchExchange, gql } from '@urql/core';
import { check, graphqlUrl, login, main } from './common.mjs';

main(async () => {
  const token = await login();
  const client = new Client({
    url: graphqlUrl,
    exchanges: [fetchExchange],
    fetchOptions: () => ({ headers: { authorization: `Bearer ${token}` } }),
    requestPolicy: 'network-only',
  });
  const title = `urql ${Date.now()}`;
  const ins = await client
    .mutation(
      gql`
        mutation Add($objects: [app_notes_insert_input!]!) {
          insert_app_notes(objects: $objects) { affected_rows returning { id title } }
        }
      `,
      { objects: [{ title }, { title: `${title} b` }] },
    )
    .toPromise();
  check(!ins.error, `insert: ${ins.error}`);
  check(ins.data.insert_app_notes.affected_rows === 2, 'two rows inserted');

  const q = await client
    .query(
      gql`
        query List($p: String!) {
          app_notes(where: { title: { _like: $p } }, order_by: [{ title: desc }]) { title }
        }
      `,
      { p: `${title}%` },
    )
    .toPromise();
  check(!q.error, `query: ${q.error}`);
  check(
    JSON.stringify(q.data.app_notes.map((n) => n.title)) === JSON.stringify([`${title} b`, title]),
    `ordered result ${JSON.stringify(q.data)}`,
  );

  const bad = await client.query(gql`{ app_notes(where: { nope: { _eq: 1 } }) { id } }`, {}).toPromise();
  check(bad.error?.graphQLErrors?.[0]?.extensions?.code === 'GRAPHQL_VALIDATION_FAILED', `validation code: ${bad.error}`);
  return { rows: q.data.app_notes.length };
});
