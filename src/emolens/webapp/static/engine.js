// EmoLens on-device engine: ONNX Runtime Web sessions for RetinaFace and the emotion model, around
// the pure pipeline in pipeline.js. Nothing here talks to the server except to fetch the two model
// files (which the service worker keeps for offline use).
import * as P from "./pipeline.js";

// ONNX Runtime Web: WebGPU where the browser has an adapter, WASM otherwise. Threads need a
// cross-origin isolated page (the server sends COOP/COEP for /app). `vendor`: where the build's
// files are (config.json's `vendor`).
export async function loadRuntime({ vendor, backend = "auto", threads = 0 }) {
  const base = new URL(vendor, import.meta.url).href;
  let useGpu = false;
  if (backend !== "wasm" && typeof navigator !== "undefined" && navigator.gpu) {
    try { useGpu = Boolean(await navigator.gpu.requestAdapter()); } catch { useGpu = false; }
  }
  if (backend === "webgpu" && !useGpu) throw new Error("this browser has no WebGPU adapter");
  const ort = await import(base + (useGpu ? "ort.webgpu.min.mjs" : "ort.wasm.min.mjs"));
  ort.env.wasm.wasmPaths = base;
  const isolated = typeof crossOriginIsolated !== "undefined" && crossOriginIsolated;
  const cores = (typeof navigator !== "undefined" && navigator.hardwareConcurrency) || 1;
  ort.env.wasm.numThreads = isolated ? (threads || Math.min(4, cores)) : 1;
  ort.env.wasm.proxy = false;
  return { ort, providers: useGpu ? ["webgpu", "wasm"] : ["wasm"], threads: ort.env.wasm.numThreads };
}

async function fetchBytes(url, headers = {}) {
  const res = await fetch(url, { headers });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}

export class Engine {
  // config: /app/config.json (settings and model URLs); runtime: loadRuntime()'s answer; headers:
  // sent with the model requests (an X-API-Key where the server requires one for reads).
  static async create(config, runtime, headers = {}) {
    const [detBytes, emoBytes] = await Promise.all([
      fetchBytes(config.detector.url, headers), fetchBytes(config.model.url, headers),
    ]);
    const meta = P.modelMeta(P.readOnnxMetadata(emoBytes), config.model.name);
    const opts = { executionProviders: runtime.providers, graphOptimizationLevel: "all" };
    const [detector, classifier] = await Promise.all([
      runtime.ort.InferenceSession.create(detBytes, opts),
      runtime.ort.InferenceSession.create(emoBytes, opts),
    ]);
    return new Engine(config, runtime, detector, classifier, meta);
  }

  constructor(config, runtime, detector, classifier, meta) {
    this.config = config;
    this.runtime = runtime;
    this.detector = detector;
    this.classifier = classifier;
    this.meta = meta;
    this.options = {
      maxSide: config.settings.max_side,
      minFaceSize: config.settings.min_face_size,
      scoreThreshold: config.settings.detection_threshold,
      maxFaces: config.settings.max_faces,
    };
  }

  get labels() { return this.meta.labels; }

  // RetinaFace as the server runs it: native size (or a little under) first, then the regions of
  // possible small faces enlarged (pipeline.js detectFaces).
  async detect(img, timings = {}) {
    const { ort } = this.runtime;
    const run = async (input) => {
      const out = await this.detector.run({ input: new ort.Tensor("float32", input.tensor, input.dims) });
      return { loc: out.loc.data, conf: out.conf.data, ldm: out.landmarks.data };
    };
    return P.detectFaces(img, this.options, run, timings);
  }

  async classify(crops) {
    const { size, channels, layout } = this.meta.input;
    const dims = layout === "NCHW" ? [crops.length, channels, size, size] : [crops.length, size, size, channels];
    const { ort } = this.runtime;
    const name = this.classifier.inputNames[0];
    const out = await this.classifier.run({ [name]: new ort.Tensor("float32", P.toInput(crops, this.meta.input), dims) });
    const y = out[this.classifier.outputNames[0]].data;
    const k = this.labels.length;
    const rows = [];
    for (let i = 0; i < crops.length; i++) {
      const row = Array.from(y.subarray(i * k, (i + 1) * k));
      rows.push(P.scaleProbabilities(row, this.meta));
    }
    return rows;
  }

  // One image → faces shaped like the REST API's (box, score, landmarks, label, confidence, probs).
  async analyze(img) {
    const timings = {};
    const t0 = performance.now();
    const found = await this.detect(img, timings);
    const t1 = performance.now();
    const { size, channels } = this.meta.input;
    const faces = found.map((f, index) => ({ index, ...f, label: null, confidence: null, probs: {} }));
    const crops = [], ok = [];
    faces.forEach((f, i) => {
      try {
        crops.push(P.alignFace(img, f.box, f.landmarks, size, channels));
        ok.push(i);
      } catch (e) {
        f.error = `alignment failed: ${e.message}`; // one bad face never aborts the image
      }
    });
    const t2 = performance.now();
    if (crops.length) {
      const probs = await this.classify(crops);
      ok.forEach((i, n) => {
        const p = Object.fromEntries(this.labels.map((l, j) => [l, probs[n][j]]));
        faces[i].probs = p;
        faces[i].label = P.decide(p, this.meta.thresholds);
        faces[i].confidence = Math.max(...probs[n]);
      });
    }
    const t3 = performance.now();
    const { detect_passes: _passes, ...detectMs } = timings; // a count, not milliseconds
    return {
      width: img.width, height: img.height, model: this.config.model.name, detector: "retinaface", labels: this.labels,
      faces, timings_ms: { detect: t1 - t0, ...detectMs, align: t2 - t1, classify: t3 - t2 },
    };
  }

  // The aligned colour crop that feedback stores (FeedbackStore's CROP_SIZE, RGB), as PNG-ready pixels.
  feedbackCrop(img, face, size = 96) {
    return P.alignFace(img, face.box, face.landmarks, size, 3);
  }
}
