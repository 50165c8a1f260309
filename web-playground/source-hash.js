// The hash of the playground's sources, recorded in dist.sha256 by the build.
// web-playground/src/lib.rs computes the same hash in a test: keep the two in step.
// Each file, in sorted path order, adds "<path>\n<byte length>\n<bytes>\n" to a SHA-256.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('.', import.meta.url));
export const SOURCES = ['index.html', 'vite.config.js', 'source-hash.js', 'package.json', 'package-lock.json', 'app'];

function files(path) {
  const full = join(ROOT, path);
  try {
    return readdirSync(full, { withFileTypes: true }).flatMap((e) => files(join(path, e.name)));
  } catch (e) {
    if (e.code === 'ENOTDIR') return [relative(ROOT, full).split('\\').join('/')];
    throw e;
  }
}

export function sourceHash() {
  const hash = createHash('sha256');
  const all = SOURCES.flatMap(files).sort();
  for (const path of all) {
    const bytes = readFileSync(join(ROOT, path));
    hash.update(`${path}\n${bytes.length}\n`);
    hash.update(bytes);
    hash.update('\n');
  }
  return hash.digest('hex');
}
