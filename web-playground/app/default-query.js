// The query a newcomer sees first, built from the tables the signed-in role can read.

export const TABLES_QUERY = `query KalamDBPlaygroundTables {
  __schema {
    queryType { fields { name type { ...Ref } } }
    mutationType { fields { name } }
    types { name fields { name type { ...Ref } } }
  }
}
fragment Ref on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }`;

const SYSTEM_COLUMNS = new Set(['_seq', '_deleted']);

function named(t) {
  while (t && (t.kind === 'NON_NULL' || t.kind === 'LIST')) t = t.ofType;
  return t;
}

function isListOfObjects(t) {
  if (t?.kind === 'NON_NULL') t = t.ofType;
  return t?.kind === 'LIST' && named(t)?.kind === 'OBJECT';
}

function isLeaf(t) {
  const kind = named(t)?.kind;
  return kind === 'SCALAR' || kind === 'ENUM';
}

/** Tables as `{ field, columns }`, in the order of the schema. */
export function tablesOf(schema) {
  const types = new Map(schema.types.map((t) => [t.name, t]));
  return schema.queryType.fields
    .filter((f) => !f.name.startsWith('__') && isListOfObjects(f.type))
    .map((f) => ({
      field: f.name,
      columns: (types.get(named(f.type).name)?.fields ?? [])
        .filter((c) => isLeaf(c.type) && !SYSTEM_COLUMNS.has(c.name))
        .map((c) => c.name),
    }));
}

/**
 * `insert_<t>_one(object: {...})` with a sample value for each non-null text column;
 * other non-null columns are taken to have defaults (ids, flags, timestamps).
 */
function insertExample(schema, table) {
  const mutations = new Set((schema.mutationType?.fields ?? []).map((f) => f.name));
  const name = `insert_${table.field}_one`;
  if (!mutations.has(name)) return null;
  const row = schema.types.find((t) => t.name === named(schema.queryType.fields.find((f) => f.name === table.field).type).name);
  const text = (row?.fields ?? []).filter(
    (f) => f.type.kind === 'NON_NULL' && named(f.type).name === 'String' && !SYSTEM_COLUMNS.has(f.name),
  );
  if (text.length === 0) return null;
  const object = text.map((f) => `${f.name}: "hello from the playground"`).join(', ');
  return `mutation { ${name}(object: {${object}}) { ${table.columns[0] ?? '__typename'} } }`;
}

export function buildDefaultQuery(schema, session) {
  const tables = tablesOf(schema);
  const who = `${session.user} (role ${session.role})`;
  if (tables.length === 0) {
    return [
      `# Welcome to the KalamDB playground, ${who}.`,
      '#',
      '# No table is visible to your role yet. Tables are created with SQL, for example:',
      `#   curl -u root:... -H 'content-type: application/json' http://${window.location.host}/v1/sql \\`,
      `#     -d '{"sql": "CREATE TABLE app.todos (id BIGINT PRIMARY KEY, title TEXT) WITH (TYPE = \\'USER\\')"}'`,
      '# The Docs panel on the left updates when a table appears.',
      'query {',
      '  __typename',
      '}',
      '',
    ].join('\n');
  }
  const shown = tables.slice(0, 3);
  const insert = tables.map((t) => insertExample(schema, t)).find(Boolean);
  const lines = [
    `# Welcome to the KalamDB playground, ${who}.`,
    '#',
    `# Your role reads ${tables.length} table${tables.length === 1 ? '' : 's'}: ${tables.map((t) => t.field).join(', ')}.`,
    '# Run this query with Ctrl+Enter (Cmd+Enter on a Mac). The Docs and Explorer panels',
    '# on the left show every table, filter, aggregate and mutation your role may use.',
    '#',
    '# Live results: change `query` to `subscription` and keep one table field; each',
    '# change to its result arrives at once, from any client.',
  ];
  if (insert) lines.push('# Try it: run this in another tab while the subscription runs:', `#   ${insert}`);
  const hasMe = schema.queryType.fields.some((f) => f.name === '_me');
  lines.push('query {');
  if (hasMe) lines.push('  _me { user_id role }');
  for (const table of shown) {
    const columns = table.columns.length ? table.columns : ['__typename'];
    lines.push(`  ${table.field}(limit: 10) {`, ...columns.map((c) => `    ${c}`), '  }');
  }
  lines.push('}', '');
  return lines.join('\n');
}
