#!/usr/bin/env node
// Assemble a self-contained sidecar for the Elixir client's priv/sidecar (what a `mix release` carries):
//   node scripts/pack-sidecar.mjs <repository root> <destination>
// Copies dist/src and dist/port (built by `npm run build`), package.json, models/, templates_data/ and the
// production dependencies of package-lock.json from <root>/node_modules (dev dependencies are left out, and so
// are onnxruntime-node's binaries for other platforms: build on the target's OS and architecture). node_modules
// is copied again only when package-lock.json changed. Run by `mix compile` / `mix prompt_engine.sidecar`
// (elixir_client/lib/mix/tasks/prompt_engine.sidecar.ex); see docs/deploying.md.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const [rootArg, destArg] = process.argv.slice(2);
if (rootArg === undefined || destArg === undefined) {
  process.stderr.write('usage: node scripts/pack-sidecar.mjs <repository root> <destination>\n');
  process.exit(2);
}
const root = path.resolve(rootArg);
const dest = path.resolve(destArg);

const fail = (msg) => {
  process.stderr.write(`pack-sidecar: ${msg}\n`);
  process.exit(1);
};

if (!fs.existsSync(path.join(root, 'dist', 'port', 'main.js'))) fail(`${root}/dist/port/main.js is missing: run \`npm run build\` in ${root}`);
if (!fs.existsSync(path.join(root, 'node_modules'))) fail(`${root}/node_modules is missing: run \`npm ci\` in ${root}`);

fs.mkdirSync(dest, { recursive: true });

const copy = (from, to) => {
  fs.rmSync(to, { recursive: true, force: true });
  fs.cpSync(from, to, { recursive: true, dereference: true });
};

// The compiled sidecar (tests and benchmarks are not shipped), its package.json (ESM, version) and data.
copy(path.join(root, 'dist', 'src'), path.join(dest, 'dist', 'src'));
copy(path.join(root, 'dist', 'port'), path.join(dest, 'dist', 'port'));
for (const dir of ['models', 'templates_data']) copy(path.join(root, dir), path.join(dest, dir));
fs.copyFileSync(path.join(root, 'package.json'), path.join(dest, 'package.json'));

// Production dependencies, as package-lock.json lists them.
const lockText = fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8');
const lockHash = crypto.createHash('sha256').update(lockText).update(`${process.platform}-${process.arch}`).digest('hex');
const stamp = path.join(dest, 'node_modules', '.prompt-engine-lock');
if (fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8') === lockHash) {
  process.stderr.write('pack-sidecar: node_modules unchanged\n');
} else {
  const lock = JSON.parse(lockText);
  const nm = path.join(dest, 'node_modules');
  fs.rmSync(nm, { recursive: true, force: true });
  fs.mkdirSync(nm, { recursive: true });
  let count = 0;
  for (const [key, meta] of Object.entries(lock.packages ?? {})) {
    // Top-level packages only ("node_modules/x", "node_modules/@s/x"): their nested node_modules come along.
    if (!/^node_modules\/(@[^/]+\/)?[^/]+$/.test(key) || meta.dev === true) continue;
    const from = path.join(root, key);
    if (!fs.existsSync(from)) {
      if (meta.optional === true || meta.devOptional === true) continue; // another platform's optional package
      fail(`${from} is missing (package-lock.json lists it): run \`npm ci\` in ${root}`);
    }
    fs.cpSync(from, path.join(dest, key), { recursive: true, dereference: true });
    count++;
  }
  // onnxruntime-node ships native libraries for every platform (~290 MB); keep this one's.
  const ortBin = path.join(nm, 'onnxruntime-node', 'bin', 'napi-v6');
  if (fs.existsSync(ortBin)) {
    for (const platform of fs.readdirSync(ortBin)) {
      const pdir = path.join(ortBin, platform);
      if (platform !== process.platform) fs.rmSync(pdir, { recursive: true, force: true });
      else for (const arch of fs.readdirSync(pdir)) if (arch !== process.arch) fs.rmSync(path.join(pdir, arch), { recursive: true, force: true });
    }
  }
  fs.writeFileSync(stamp, lockHash);
  process.stderr.write(`pack-sidecar: ${count} production packages copied\n`);
}
