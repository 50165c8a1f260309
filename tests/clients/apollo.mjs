// Apollo Client against the real server: log in, mutate, query (with variables,
// cache normalisation by id) and read an error with its code.
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { check, graphqlUrl, login, main } from './common.mjs';

main(async () => {
  const token = await login();
  const client = new ApolloClient({
    link: new HttpLink({ uri: graphqlUrl, headers: { authorization: `Bearer ${token}` } }),
    cache: new InMemoryCache(),
  });
  const title = `apollo ${Date.now()}`;
  const inserted = await client.mutate({
    mutation: gql`
      mutation Add($title: String!) {
        insert_app_notes_one(object: { title: $title }) { id title done }
      }
    `,
    variables: { title },
  });
  const row = inserted.data.insert_app_notes_one;
  check(row.title === title && row.done === false, `inserted ${JSON.stringify(row)}`);
  check(typeof row.id === 'string', 'BigInt ids arrive as strings');

  const listed = await client.query({
    query: gql`
      query List($t: String!) {
        app_notes(where: { title: { _eq: $t } }) { id title }
        app_notes_aggregate { aggregate { count } }
      }
    `,
    variables: { t: title },
    fetchPolicy: 'network-only',
  });
  check(listed.data.app_notes.length === 1 && listed.data.app_notes[0].id === row.id, 'query finds the row');
  check(listed.data.app_notes_aggregate.aggregate.count >= 1, 'aggregate count');

  const updated = await client.mutate({
    mutation: gql`
      mutation Done($id: BigInt!) {
        update_app_notes_by_pk(pk_columns: { id: $id }, _set: { done: true }) { id done }
      }
    `,
    variables: { id: row.id },
  });
  check(updated.data.update_app_notes_by_pk.done === true, 'update by pk');

  let code = null;
  try {
    await client.query({ query: gql`{ app_notes(limit: -1) { id } }`, fetchPolicy: 'network-only' });
  } catch (e) {
    code = e?.errors?.[0]?.extensions?.code ?? e?.graphQLErrors?.[0]?.extensions?.code ?? null;
  }
  check(code === 'INVALID_INPUT', `error code reaches Apollo, got ${code}`);
  return { id: row.id };
});
