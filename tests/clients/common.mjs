// Shared by the client scripts: where the server is, and a password login that
// returns a bearer access token.
export const url = process.env.KALAMDB_URL;
if (!url) {
  console.error('KALAMDB_URL is not set');
  process.exit(2);
}
export const graphqlUrl = `${url}/v1/graphql`;

export async function login(user = process.env.KALAMDB_USER, password = process.env.KALAMDB_PASSWORD) {
  const res = await fetch(`${url}/v1/auth/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username: user, password }),
  });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`login failed: ${res.status} ${JSON.stringify(body)}`);
  return body.access_token;
}

export function check(cond, message) {
  if (!cond) throw new Error(`check failed: ${message}`);
}

export async function main(fn) {
  try {
    const out = await fn();
    console.log(JSON.stringify({ ok: true, ...out }));
    process.exit(0);
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e?.stack ?? e) }));
    process.exit(1);
  }
}
