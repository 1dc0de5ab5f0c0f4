// Copies ONNX Runtime Web from the pinned npm package (web/package-lock.json) into the Python
// package, gzipped, and writes BUILD.json (version, sizes, sha256). Reproducible: same lock file,
// same bytes (gzip without a timestamp). Run through scripts/build_webapp.sh after `npm ci`.
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { constants, gzipSync } from "node:zlib";

const here = dirname(fileURLToPath(import.meta.url));
const pkgDir = join(here, "node_modules", "onnxruntime-web");
const out = join(here, "..", "src", "emolens", "webapp", "static", "vendor");
// The WASM backend (every browser) and the WebGPU one (loaded only where the browser has it).
const FILES = [
  "ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm",
  "ort.webgpu.min.mjs", "ort-wasm-simd-threaded.asyncify.mjs", "ort-wasm-simd-threaded.asyncify.wasm",
];

const pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
const files = {};
for (const name of FILES) {
  const data = readFileSync(join(pkgDir, "dist", name));
  const packed = gzipSync(data, { level: constants.Z_BEST_COMPRESSION });
  writeFileSync(join(out, `${name}.gz`), packed);
  files[name] = { bytes: data.length, gzip_bytes: packed.length, sha256: createHash("sha256").update(data).digest("hex") };
}
// The MIT licence travels with the copied files.
for (const name of ["LICENSE", "LICENSE.txt", "README.md"]) {
  try { copyFileSync(join(pkgDir, name), join(out, name === "README.md" ? "README-onnxruntime-web.md" : name)); } catch { /* not in this release */ }
}
const info = { package: "onnxruntime-web", version: pkg.version, license: pkg.license, files };
writeFileSync(join(out, "BUILD.json"), JSON.stringify(info, null, 2) + "\n");
const total = Object.values(files).reduce((a, f) => a + f.gzip_bytes, 0);
console.log(`onnxruntime-web ${pkg.version}: ${FILES.length} files, ${(total / 1e6).toFixed(1)} MB gzipped → ${out}`);
