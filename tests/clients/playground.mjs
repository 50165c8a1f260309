// The playground in a real browser: Debian's headless Chromium driven by playwright-core,
// against the real server (started by tests/e2e/playground.rs with the demo schema).
// Prints one JSON line with what it saw; any failed expectation throws.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.KALAMDB_URL;
const demo = { user: process.env.DEMO_USER, password: process.env.DEMO_PASSWORD };
const service = { user: process.env.SERVICE_USER, password: process.env.SERVICE_PASSWORD };
const rootPassword = process.env.ROOT_PASSWORD;
const tokenTtlMs = Number(process.env.ACCESS_TOKEN_TTL_SECS) * 1000;
const outDir = process.env.TEST_OUTPUT_DIR;
const origin = new URL(base);

const basic = (u, p) => `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}`;

async function sql(user, password, text) {
  const res = await fetch(`${base}/v1/sql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: basic(user, password) },
    body: JSON.stringify({ sql: text }),
  });
  assert.equal(res.status, 200, `${text}: ${await res.text()}`);
}

/** A mutation from outside the page, through the GraphQL API, as the demo user. */
async function insertTodo(title) {
  const res = await fetch(`${base}/v1/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: basic(demo.user, demo.password) },
    body: JSON.stringify({
      query: 'mutation ($t: String!) { insert_app_todos_one(object: {title: $t}) { id } }',
      variables: { t: title },
    }),
  });
  const body = await res.json();
  assert.ok(body.data?.insert_app_todos_one?.id, JSON.stringify(body));
}

const profile = mkdtempSync(join(tmpdir(), 'kalamdb-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
});

const requests = [];
const problems = [];
context.on('request', (r) => requests.push(r.url()));
const page = context.pages()[0] ?? (await context.newPage());
page.on('websocket', (ws) => requests.push(ws.url()));
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => {
  if (m.type() === 'error' && /Content.Security.Policy|Refused to/i.test(m.text())) problems.push(m.text());
});

const response = page.locator('.graphiql-response');
const queryEditor = page.locator('.graphiql-query-editor .monaco-editor').first();

async function responseShows(text, timeout = 10000) {
  await page.waitForFunction(
    (t) => document.querySelector('.graphiql-response')?.innerText.replace(/\u00a0/g, ' ').includes(t),
    text,
    { timeout },
  );
}

/** Types an operation the way a person would, then runs it with Ctrl+Enter. */
async function run(operation) {
  // a running subscription turns the run button into a stop button: stop it first
  const stop = page.locator('button[aria-label^="Stop"]');
  if (await stop.count()) {
    await stop.click();
    await page.locator('button[aria-label^="Execute"]').waitFor();
  }
  await queryEditor.click();
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Backspace');
  await page.keyboard.insertText(operation);
  // GraphiQL re-parses the editor after a short debounce; before that it would send
  // the previous operation's kind
  await page.waitForTimeout(400);
  await page.keyboard.press('ControlOrMeta+Enter');
  // back to the start of the line, so that the screenshot shows the whole operation
  await page.keyboard.press('Home');
}

async function signIn(who) {
  await page.fill('#kdb-username', who.user);
  await page.fill('#kdb-password', who.password);
  await page.click('button[type=submit]');
}

const seen = {};
try {
  await page.goto(`${base}/`);
  await page.waitForSelector('#kdb-username');

  // a wrong password and an unknown user get the same generic message
  await signIn({ user: demo.user, password: 'not-the-password' });
  const alert = page.locator('[role=alert]');
  await alert.waitFor();
  seen.wrongPassword = (await alert.innerText()).trim();
  await signIn({ user: 'nobody-by-this-name', password: 'whatever-password' });
  await page.waitForFunction(() => !document.querySelector('button[type=submit]')?.disabled);
  seen.unknownUser = (await alert.innerText()).trim();
  assert.equal(seen.wrongPassword, seen.unknownUser);

  // the demo user signs in; the bar shows who and which role
  await insertTodo('buy milk');
  await signIn(demo);
  const who = page.locator('[data-testid=signed-in]');
  await who.waitFor();
  seen.signedIn = (await who.innerText()).trim();
  const signedInAt = Date.now();
  const firstToken = await page.evaluate(() => JSON.parse(sessionStorage.getItem('kalamdb.session')).accessToken);

  // the default query, built from the demo schema, runs as it stands
  await queryEditor.waitFor();
  await page.waitForFunction(() => document.querySelector('.graphiql-query-editor')?.innerText.includes('app_todos'));
  seen.defaultQuery = (await page.locator('.graphiql-query-editor .view-lines').innerText()).replace(/\u00a0/g, ' ');
  await page.click('.graphiql-execute-button');
  await responseShows('buy milk');

  // a query typed by hand
  await run('query { app_todos_aggregate { aggregate { count } } }');
  await responseShows('"count": 1');

  // a live query over graphql-transport-ws; a mutation from outside the page shows up
  await run('subscription Todos { app_todos(order_by: {title: asc}) { title done } }');
  await responseShows('buy milk');
  await insertTodo('walk the dog');
  await responseShows('walk the dog');
  mkdirSync(outDir, { recursive: true });
  seen.screenshot = join(outDir, 'playground.png');
  await page.screenshot({ path: seen.screenshot });

  // outlive the first access token: the page refreshes it, the socket (closed by the
  // server when its token expires) reconnects with the new one, and the live query goes on
  const wait = signedInAt + tokenTtlMs + 1500 - Date.now();
  if (wait > 0) await page.waitForTimeout(wait);
  const laterToken = await page.evaluate(() => JSON.parse(sessionStorage.getItem('kalamdb.session')).accessToken);
  seen.tokenRefreshed = laterToken !== firstToken;
  await insertTodo('water the plants');
  await responseShows('water the plants', 15000);

  // DDL elsewhere: the next response carries a new schema generation, and the
  // explorer shows the new table
  await sql('root', rootPassword, "CREATE TABLE app.notes (id BIGINT PRIMARY KEY, body TEXT) WITH (TYPE = 'USER')");
  await run('query { app_todos { title } }');
  await responseShows('water the plants');
  await page.click('button[aria-label="Show GraphiQL Explorer"]');
  await page.waitForFunction(() => document.body.innerText.includes('app_notes'), null, { timeout: 10000 });
  seen.schemaRefreshed = true;

  // sign out ends the session on the server: its token no longer works
  const signedOutToken = await page.evaluate(() => JSON.parse(sessionStorage.getItem('kalamdb.session')).accessToken);
  await page.click('text=Sign out');
  await page.waitForSelector('#kdb-username');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kalamdb.session')), null);
  for (let i = 0; ; i++) {
    const res = await fetch(`${base}/v1/sql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${signedOutToken}` },
      body: JSON.stringify({ sql: 'SELECT 1' }),
    });
    if (res.status === 401) break;
    assert.ok(i < 50, 'the signed-out token still works');
    await new Promise((r) => setTimeout(r, 100));
  }
  seen.loggedOut = true;

  // then a service user acts for the demo user
  await signIn(service);
  await who.waitFor();
  await page.fill('#kdb-actas', demo.user);
  await page.click('.kdb-actas button');
  await page.waitForFunction((u) => document.querySelector('[data-testid=signed-in]')?.innerText.includes(`acting as ${u}`), demo.user);
  await queryEditor.waitFor();
  await run('query { app_todos(order_by: {title: asc}) { title } }');
  await responseShows('walk the dog');
  seen.actedAs = true;

  // sign in through the configured OIDC provider: its button, the provider, and back.
  // The page itself loaded nothing from elsewhere up to here; the sign-in navigates to
  // the provider's authorize page and nowhere else.
  const beforeOAuth = requests.length;
  await page.click('text=Sign out');
  await page.waitForSelector('#kdb-username');
  await page.click(`text=Sign in with ${process.env.OAUTH_PROVIDER}`);
  await who.waitFor();
  seen.oauthSignedIn = (await who.innerText()).trim();
  assert.ok(!page.url().includes('code='), `the one-time code stays out of the address bar: ${page.url()}`);

  assert.deepEqual(problems, []);
  const isForeign = (u) => {
    const url = new URL(u);
    if (url.protocol === 'data:' || url.protocol === 'blob:') return false;
    return url.host !== origin.host || !['http:', 'ws:'].includes(url.protocol);
  };
  const foreign = requests.slice(0, beforeOAuth).filter(isForeign);
  seen.requests = requests.length;
  seen.websockets = requests.filter((u) => u.startsWith('ws:')).length;
  seen.foreign = foreign;
  assert.deepEqual(foreign, []);
  const duringOAuth = requests.slice(beforeOAuth).filter(isForeign);
  assert.equal(duringOAuth.length, 1, JSON.stringify(duringOAuth));
  assert.equal(new URL(duringOAuth[0]).pathname, '/authorize');
  console.log(JSON.stringify(seen));
} catch (e) {
  mkdirSync(outDir, { recursive: true });
  await page.screenshot({ path: join(outDir, 'playground-failure.png') }).catch(() => {});
  console.log(JSON.stringify({ ...seen, problems, requests }));
  throw e;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
