// Bundle the client for browsers: dist/xtmp.js, one ES module with the
// noble crypto and fflate inside (the `ws` package stays out: browsers
// have WebSocket).

import { build } from 'esbuild';

await build({
  entryPoints: ['src/index.js'],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020'],
  external: ['ws'],
  minify: true,
  sourcemap: true,
  outfile: 'dist/xtmp.js',
  logLevel: 'warning',
});
