// Builds the playground into dist/, which the kalamdb binary embeds. `make playground`
// runs this. After the bundle, the build writes a gzip copy of each large asset (served
// to browsers that accept gzip) and records the hash of its sources in dist.sha256,
// which a Rust test compares against the sources so that a stale bundle fails `make test`.
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { defineConfig } from 'vite';
import { sourceHash } from './source-hash.js';

const workers = [
  'monaco-editor/esm/vs/language/json/json.worker.js',
  'monaco-graphql/esm/graphql.worker.js',
  'monaco-editor/esm/vs/editor/editor.worker.js',
];

export default defineConfig({
  base: './',
  worker: { format: 'es' },
  optimizeDeps: { exclude: workers },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: false,
    // Monaco is large; the bundle is served from the binary, not over the internet
    chunkSizeWarningLimit: 8192,
  },
  plugins: [
    {
      name: 'kalamdb-source-hash',
      apply: 'build',
      closeBundle() {
        const assets = new URL('./dist/assets/', import.meta.url);
        for (const name of readdirSync(assets)) {
          const bytes = readFileSync(new URL(name, assets));
          if (bytes.length < 1024 || !/\.(js|css|ttf|svg|json)$/.test(name)) continue;
          const gz = gzipSync(bytes, { level: 9 });
          if (gz.length < bytes.length) writeFileSync(new URL(`${name}.gz`, assets), gz);
        }
        writeFileSync(new URL('./dist.sha256', import.meta.url), `${sourceHash()}\n`);
      },
    },
  ],
});
