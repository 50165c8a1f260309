// The KalamDB playground: a sign-in panel, then GraphiQL against the signed-in role's
// schema. Written without JSX, so that vite needs no React plugin.
import 'graphiql/setup-workers/vite';
import 'graphiql/style.css';
import '@graphiql/plugin-explorer/style.css';
import './style.css';

import { createElement as h, useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { createRoot } from 'react-dom/client';
import { GraphiQL, HISTORY_PLUGIN } from 'graphiql';
import { explorerPlugin } from '@graphiql/plugin-explorer';

import { connect } from './connection.js';
import { TABLES_QUERY, buildDefaultQuery } from './default-query.js';
import * as session from './session.js';

const PLUGINS = [HISTORY_PLUGIN, explorerPlugin()];

/** The page's own URL without a query: where a provider sign-in comes back to. */
function pageUrl() {
  return `${window.location.origin}${window.location.pathname}`;
}

function SignIn({ notice, onSignedIn }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [providers, setProviders] = useState([]);
  useEffect(() => {
    session.providers().then(setProviders);
  }, []);
  // back from a provider: trade the one-time code for tokens, and drop it from the URL
  useEffect(() => {
    const code = new URLSearchParams(window.location.search).get('code');
    if (!code) return;
    window.history.replaceState(null, '', pageUrl());
    setBusy(true);
    session
      .exchange(code)
      .then(onSignedIn)
      .catch((err) => {
        setError(err.message);
        setBusy(false);
      });
  }, [onSignedIn]);
  const submit = async (e) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await session.login(username, password));
    } catch (err) {
      setError(err.message);
      setBusy(false);
    }
  };
  return h(
    'main',
    { className: 'kdb-signin' },
    h(
      'form',
      { className: 'kdb-card', onSubmit: submit, 'aria-label': 'Sign in' },
      h('h1', null, 'KalamDB playground'),
      h('p', { className: 'kdb-muted' }, 'Sign in to query, change and subscribe to your tables.'),
      notice && h('p', { className: 'kdb-notice', role: 'status' }, notice),
      h('label', { htmlFor: 'kdb-username' }, 'Username'),
      h('input', {
        id: 'kdb-username',
        name: 'username',
        autoComplete: 'username',
        required: true,
        autoFocus: true,
        value: username,
        onChange: (e) => setUsername(e.target.value),
      }),
      h('label', { htmlFor: 'kdb-password' }, 'Password'),
      h('input', {
        id: 'kdb-password',
        name: 'password',
        type: 'password',
        autoComplete: 'current-password',
        required: true,
        value: password,
        onChange: (e) => setPassword(e.target.value),
      }),
      error && h('p', { className: 'kdb-error', role: 'alert' }, error),
      h('button', { type: 'submit', disabled: busy }, busy ? 'Signing in…' : 'Sign in'),
      providers.length > 0 && h('p', { className: 'kdb-muted kdb-or' }, 'or'),
      ...providers.map((p) =>
        h(
          'a',
          {
            key: p.name,
            className: 'kdb-provider',
            href: `${p.start}?redirect=${encodeURIComponent(pageUrl())}`,
          },
          `Sign in with ${p.name}`,
        ),
      ),
      h(
        'p',
        { className: 'kdb-muted kdb-small' },
        'After `make run`, the demo user is shown in the server’s start-up banner.',
      ),
    ),
  );
}

function ActAs({ value, onChange }) {
  const [draft, setDraft] = useState(value);
  useEffect(() => setDraft(value), [value]);
  const apply = (e) => {
    e.preventDefault();
    onChange(draft.trim());
  };
  return h(
    'form',
    { className: 'kdb-actas', onSubmit: apply, title: 'Sends X-KalamDB-User-Id: act for this user' },
    h('label', { htmlFor: 'kdb-actas' }, 'Act as user'),
    h('input', {
      id: 'kdb-actas',
      placeholder: 'user id',
      value: draft,
      onChange: (e) => setDraft(e.target.value),
    }),
    h('button', { type: 'submit' }, draft.trim() === value ? 'Applied' : 'Apply'),
  );
}

function Bar({ current, actAs, onActAs, onSignOut }) {
  return h(
    'header',
    { className: 'kdb-bar' },
    h('span', { className: 'kdb-brand' }, 'KalamDB'),
    h('span', { className: 'kdb-spacer' }),
    session.CAN_ACT_AS.has(current.role) && h(ActAs, { value: actAs, onChange: onActAs }),
    h(
      'span',
      { className: 'kdb-who', 'data-testid': 'signed-in' },
      'Signed in as ',
      h('strong', null, current.user),
      ' · role ',
      h('strong', null, current.role),
      actAs ? ` · acting as ${actAs}` : '',
    ),
    h('button', { type: 'button', onClick: onSignOut }, 'Sign out'),
  );
}

function Workspace({ sessionRef, actAs }) {
  const [defaultQuery, setDefaultQuery] = useState(null);
  const [loadError, setLoadError] = useState(null);
  // bumped when a response reports a new schema generation; a new fetcher makes
  // GraphiQL introspect again, so that Docs and Explorer show the new tables
  const [schemaEpoch, setSchemaEpoch] = useState(0);
  const generation = useRef(null);
  const conn = useMemo(() => {
    const headers = () => {
      const out = { Authorization: `Bearer ${sessionRef.current.accessToken}` };
      if (actAs) out['X-KalamDB-User-Id'] = actAs;
      return out;
    };
    return connect(headers, (g) => {
      if (generation.current !== null && generation.current !== g) setSchemaEpoch((e) => e + 1);
      generation.current = g;
    });
  }, [sessionRef, actAs]);
  useEffect(() => () => conn.dispose(), [conn]);
  useEffect(() => {
    let live = true;
    conn
      .query(TABLES_QUERY)
      .then((schema) => live && setDefaultQuery(buildDefaultQuery(schema.__schema, sessionRef.current)))
      .catch((err) => live && setLoadError(err.message));
    return () => {
      live = false;
    };
  }, [conn, sessionRef]);
  // DDL run elsewhere shows when the page is looked at again
  useEffect(() => {
    const check = () => conn.query('query KalamDBSchemaCheck { __typename }').catch(() => {});
    window.addEventListener('focus', check);
    return () => window.removeEventListener('focus', check);
  }, [conn]);
  const fetcher = useCallback((params, opts) => conn.fetcher(params, opts), [conn, schemaEpoch]);

  if (loadError) return h('p', { className: 'kdb-error kdb-pad', role: 'alert' }, loadError);
  if (defaultQuery === null) return h('p', { className: 'kdb-muted kdb-pad' }, 'Loading your schema…');
  return h(
    GraphiQL,
    {
      fetcher,
      defaultQuery,
      plugins: PLUGINS,
      defaultEditorToolsVisibility: false,
      shouldPersistHeaders: false,
    },
    h(GraphiQL.Logo, null, 'KalamDB'),
  );
}

function App() {
  const [current, setCurrent] = useState(session.load);
  const [notice, setNotice] = useState(null);
  const [actAs, setActAs] = useState(session.loadActAs);
  const sessionRef = useRef(current);
  sessionRef.current = current;

  const signOut = useCallback((message) => {
    const ending = session.load();
    if (ending && !message) session.logout(ending);
    session.clear();
    setActAs('');
    setNotice(message ?? null);
    setCurrent(null);
  }, []);

  // rotate the tokens before the access token expires
  useEffect(() => {
    if (!current) return undefined;
    const timer = setTimeout(() => {
      session
        .refresh(current)
        .then(setCurrent)
        .catch(() => signOut('Your session ended. Sign in again.'));
    }, session.refreshDelay(current));
    return () => clearTimeout(timer);
  }, [current, signOut]);

  const signedIn = useCallback((s) => {
    setNotice(null);
    setCurrent(s);
  }, []);
  if (!current) return h(SignIn, { notice, onSignedIn: signedIn });
  const changeActAs = (user) => {
    session.storeActAs(user);
    setActAs(user);
  };
  return h(
    'div',
    { className: 'kdb-app' },
    h(Bar, { current, actAs, onActAs: changeActAs, onSignOut: () => signOut() }),
    // a new user or a new acting-as identity gets a fresh workspace and socket
    h(Workspace, { key: `${current.user}/${actAs}`, sessionRef, actAs }),
  );
}

createRoot(document.getElementById('root')).render(h(App));
