// Runs graphql-http's server audits (GraphQL over HTTP conformance) against
// /v1/graphql. Every audit must pass: MUST, SHOULD and MAY. None is skipped.
import { serverAudits } from 'graphql-http';
import { graphqlUrl, login, main } from './common.mjs';

main(async () => {
  const token = await login();
  const fetchFn = (input, init = {}) => {
    const headers = new Headers(init.headers ?? {});
    headers.set('authorization', `Bearer ${token}`);
    return fetch(input, { ...init, headers });
  };
  const audits = serverAudits({ url: graphqlUrl, fetchFn });
  const results = await Promise.all(audits.map((a) => a.fn()));
  const failed = results.filter((r) => r.status !== 'ok');
  for (const r of failed) {
    console.error(`${r.status.toUpperCase()} ${r.id} ${r.name}: ${r.reason}`);
  }
  if (failed.length > 0) throw new Error(`${failed.length} of ${results.length} audits did not pass`);
  return { audits: results.length, passed: results.length - failed.length };
});
