// EmoLens on-device pipeline: the pure parts (no DOM, no ONNX Runtime), so that the browser app,
// the parity tests and any other JavaScript host run the same code.
//
// Each step mirrors the Python code named beside it, down to OpenCV's arithmetic where it matters
// (float32 rounding, the LMedS sampling order): the same image gives the same alignment matrix and
// the same model input as `emolens.image.align` and `emolens.classify.emotion.to_input`.
//
// Images are {width, height, data}: RGB uint8, row-major, 3 bytes a pixel.

const f32 = Math.fround;

// -------------------------------------------------------------------------------------------------
// The model-file contract: `emolens.*` keys in the ONNX metadata_props (emolens/classify/modelfile.py)

// Reads an ONNX ModelProto's metadata_props (field 14: {key = 1, value = 2}) without a protobuf
// library: only the top-level fields are walked, the graph is skipped by its length.
export function readOnnxMetadata(bytes) {
  const buf = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const text = new TextDecoder();
  let pos = 0;
  const varint = (end) => {
    let result = 0, shift = 0, b;
    do {
      if (pos >= end) throw new Error("truncated varint");
      b = buf[pos++];
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return result;
  };
  const skip = (wire, end) => {
    if (wire === 0) varint(end);
    else if (wire === 1) pos += 8;
    else if (wire === 2) { const n = varint(end); pos += n; } // (pos += varint() would read pos first)
    else if (wire === 5) pos += 4;
    else throw new Error(`unsupported protobuf wire type ${wire}`);
  };
  const props = {};
  while (pos < buf.length) {
    const tag = varint(buf.length);
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (field === 14 && wire === 2) {
      const len = varint(buf.length);
      const end = pos + len;
      let key = "", value = "";
      while (pos < end) {
        const t = varint(end);
        if ((t & 7) === 2 && (t >> 3) <= 2) {
          const n = varint(end);
          const s = text.decode(buf.subarray(pos, pos + n));
          pos += n;
          if (t >> 3 === 1) key = s; else value = s;
        } else skip(t & 7, end);
      }
      props[key] = value;
    } else skip(wire, buf.length);
    if (pos > buf.length) throw new Error("not an ONNX file (truncated)");
  }
  return props;
}

// The same checks as ModelMeta.from_props; throws an Error whose message says what to do.
export function modelMeta(props, source = "model") {
  const missing = ["emolens.labels", "emolens.input"].filter((k) => !(k in props));
  if (missing.length) {
    throw new Error(`${source} lacks EmoLens metadata (${missing.join(", ")}); add it with ` +
      "`emolens annotate MODEL --labels angry,happy,... --size 48 --channels 1`");
  }
  let labels, spec, card, thresholds, temperature, offsets;
  try {
    labels = JSON.parse(props["emolens.labels"]);
    spec = { size: 48, channels: 1, mean: [0.5], std: [0.5], layout: "NCHW", range: 255, ...JSON.parse(props["emolens.input"]) };
    card = JSON.parse(props["emolens.card"] || "{}");
    thresholds = props["emolens.thresholds"] ? JSON.parse(props["emolens.thresholds"]) : null;
    temperature = props["emolens.temperature"] ? JSON.parse(props["emolens.temperature"]) : null;
    offsets = props["emolens.offsets"] ? JSON.parse(props["emolens.offsets"]) : null;
  } catch (e) {
    throw new Error(`${source} has malformed EmoLens metadata: ${e.message}`);
  }
  const output = props["emolens.output"] || "logits";
  if (!["logits", "probabilities"].includes(output)) throw new Error(`${source}: emolens.output must be 'logits' or 'probabilities'`);
  if (!Array.isArray(labels) || !labels.length || !labels.every((s) => typeof s === "string")) {
    throw new Error(`${source}: emolens.labels must be a non-empty JSON list of names`);
  }
  if (![1, 3].includes(spec.channels)) throw new Error(`${source}: model input must have 1 or 3 channels`);
  if (!["NCHW", "NHWC"].includes(spec.layout)) throw new Error(`${source}: model input layout must be NCHW or NHWC`);
  if (![1, spec.channels].includes(spec.mean.length) || ![1, spec.channels].includes(spec.std.length)) {
    throw new Error(`${source}: model input mean/std must have 1 or \`channels\` values`);
  }
  if (temperature !== null && !(typeof temperature === "number" && temperature >= 0.01 && temperature <= 100)) {
    throw new Error(`${source}: emolens.temperature must be a number between 0.01 and 100`);
  }
  if (offsets !== null && (typeof offsets !== "object" || Array.isArray(offsets) ||
      !Object.entries(offsets).every(([k, v]) => labels.includes(k) && typeof v === "number" && Math.abs(v) <= 10))) {
    throw new Error(`${source}: emolens.offsets must map the model's labels to numbers in [-10, 10]`);
  }
  return { labels, input: spec, output, card, thresholds, temperature, offsets };
}

// emolens.classify.emotion.scale_probabilities: one face's raw output as probabilities, with the
// model's temperature and per-class logit offsets (a change of class priors) applied.
export function scaleProbabilities(row, meta) {
  const t = meta.temperature || 1;
  const shift = meta.offsets ? meta.labels.map((l) => meta.offsets[l] || 0) : null;
  if (meta.output === "probabilities") {
    if (t === 1 && !shift) return row;
    row = row.map((p) => Math.log(Math.max(p, 1e-12)));
  }
  return softmax(row.map((v, j) => v / t + (shift ? shift[j] : 0)));
}

// emolens.classify.modelfile.decide: the top label, or "uncertain" below that label's threshold.
export function decide(probs, thresholds) {
  let top = null;
  for (const [k, v] of Object.entries(probs)) if (top === null || v > probs[top]) top = k;
  if (top !== null && thresholds && probs[top] < (thresholds[top] ?? 0)) return "uncertain";
  return top;
}

// -------------------------------------------------------------------------------------------------
// Small numeric helpers

// Python's round(): halves go to the even neighbour.
export function pyRound(x) {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
const cvRound = pyRound; // lrint under the default rounding mode: the same rule

export function softmax(logits) {
  const m = Math.max(...logits);
  const e = logits.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

// -------------------------------------------------------------------------------------------------
// Resizing (cv2.resize): INTER_AREA for shrinking, INTER_LINEAR for the detector's enlargement

function areaTab(ssize, dsize, scale) {
  const tab = [];
  for (let dx = 0; dx < dsize; dx++) {
    const fsx1 = dx * scale, fsx2 = fsx1 + scale;
    const cellWidth = Math.min(scale, ssize - fsx1);
    let sx1 = Math.ceil(fsx1), sx2 = Math.floor(fsx2);
    sx2 = Math.min(sx2, ssize - 1);
    sx1 = Math.min(sx1, sx2);
    if (sx1 - fsx1 > 1e-3) tab.push([dx, sx1 - 1, f32((sx1 - fsx1) / cellWidth)]);
    for (let sx = sx1; sx < sx2; sx++) tab.push([dx, sx, f32(1.0 / cellWidth)]);
    if (fsx2 - sx2 > 1e-3) tab.push([dx, sx2, f32(Math.min(Math.min(fsx2 - sx2, 1), cellWidth) / cellWidth)]);
  }
  return tab;
}

// cv2.resize(..., interpolation=INTER_AREA) when shrinking; fx/fy are the scale factors OpenCV was
// given (the output size alone does not fix them when they were passed as fx=, fy=).
export function resizeArea(img, dw, dh, fx = dw / img.width, fy = dh / img.height) {
  const { width: sw, height: sh, data } = img;
  const out = new Uint8Array(dw * dh * 3);
  const scaleX = 1 / fx, scaleY = 1 / fy;
  const ix = Math.round(scaleX), iy = Math.round(scaleY);
  if (Math.abs(scaleX - ix) < 2.2e-16 && Math.abs(scaleY - iy) < 2.2e-16 && ix >= 1 && iy >= 1) {
    // Whole-number factors: the mean of each block (OpenCV's fast path rounds halves up).
    const area = ix * iy;
    for (let y = 0; y < dh; y++) {
      for (let x = 0; x < dw; x++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let dy = 0; dy < iy; dy++) {
            const sy = Math.min(y * iy + dy, sh - 1);
            for (let dx = 0; dx < ix; dx++) sum += data[(sy * sw + Math.min(x * ix + dx, sw - 1)) * 3 + c];
          }
          out[(y * dw + x) * 3 + c] = Math.floor((sum + (area >> 1)) / area);
        }
      }
    }
    return { width: dw, height: dh, data: out };
  }
  const xtab = areaTab(sw, dw, scaleX), ytab = areaTab(sh, dh, scaleY);
  const W = dw * 3;
  const buf = new Float32Array(W), sum = new Float32Array(W);
  const flush = (dy) => {
    for (let i = 0; i < W; i++) out[dy * W + i] = Math.min(255, Math.max(0, cvRound(sum[i])));
  };
  let prevDy = ytab[0][0];
  for (const [dy, sy, beta] of ytab) {
    buf.fill(0);
    const row = sy * sw * 3;
    for (const [dx, sx, alpha] of xtab) {
      const d = dx * 3, s = row + sx * 3;
      buf[d] = f32(buf[d] + f32(data[s] * alpha));
      buf[d + 1] = f32(buf[d + 1] + f32(data[s + 1] * alpha));
      buf[d + 2] = f32(buf[d + 2] + f32(data[s + 2] * alpha));
    }
    if (dy !== prevDy) {
      flush(prevDy);
      for (let i = 0; i < W; i++) sum[i] = f32(beta * buf[i]);
      prevDy = dy;
    } else {
      for (let i = 0; i < W; i++) sum[i] = f32(sum[i] + f32(beta * buf[i]));
    }
  }
  flush(prevDy);
  return { width: dw, height: dh, data: out };
}

// cv2.resize(..., interpolation=INTER_LINEAR): half-pixel centres, 11-bit fixed-point weights.
export function resizeLinear(img, dw, dh) {
  const { width: sw, height: sh, data } = img;
  const coefs = (ssize, dsize) => {
    const scale = ssize / dsize;
    const idx = new Int32Array(dsize), w = new Int32Array(dsize);
    for (let d = 0; d < dsize; d++) {
      let f = (d + 0.5) * scale - 0.5;
      let s = Math.floor(f);
      f -= s;
      if (s < 0) { f = 0; s = 0; }
      if (s >= ssize - 1) { f = 0; s = ssize - 1; }
      idx[d] = s;
      w[d] = cvRound(f32(f) * 2048);
    }
    return { idx, w };
  };
  const X = coefs(sw, dw), Y = coefs(sh, dh);
  const out = new Uint8Array(dw * dh * 3);
  const rowCache = new Map();
  const hrow = (sy) => {
    let r = rowCache.get(sy);
    if (r) return r;
    r = new Int32Array(dw * 3);
    const base = sy * sw * 3;
    for (let x = 0; x < dw; x++) {
      const s0 = base + X.idx[x] * 3, s1 = X.idx[x] + 1 < sw ? s0 + 3 : s0;
      const a1 = X.w[x], a0 = 2048 - a1;
      for (let c = 0; c < 3; c++) r[x * 3 + c] = data[s0 + c] * a0 + data[s1 + c] * a1;
    }
    if (rowCache.size > 4) rowCache.delete(rowCache.keys().next().value);
    rowCache.set(sy, r);
    return r;
  };
  for (let y = 0; y < dh; y++) {
    const r0 = hrow(Y.idx[y]), r1 = hrow(Math.min(Y.idx[y] + 1, sh - 1));
    const b1 = Y.w[y], b0 = 2048 - b1;
    const o = y * dw * 3;
    // OpenCV's SIMD vertical pass: 16-bit products of pre-shifted sums, then round.
    for (let i = 0; i < dw * 3; i++) {
      out[o + i] = Math.min(255, (((b0 * (r0[i] >> 4)) >> 16) + ((b1 * (r1[i] >> 4)) >> 16) + 2) >> 2);
    }
  }
  return { width: dw, height: dh, data: out };
}

// -------------------------------------------------------------------------------------------------
// RetinaFace (emolens/detect/retinaface.py and base.py)

export const DETECTOR = {
  steps: [8, 16, 32],
  minSizes: [[16, 32], [64, 128], [256, 512]],
  variances: [0.1, 0.2],
  meanBGR: [104, 117, 127],
  align: 32,
  nmsIou: 0.4,
  upscaleShortSide: 640,
  maxUpscale: 4,
  reliableFacePx: 64,
  preNmsTopK: 5000,
  // the two-pass search (retinaface.py: ONE_PASS_FACE_PX, FIRST_PASS_*, DEFAULT_CANDIDATE_PROBABILITY, _REGION*)
  onePassFacePx: 32,
  firstPassFacePx: 16,
  firstPassShrink: 0.8,
  candidateProbability: 0.2,
  regionFaces: 4,
  regionMinPx: 48,
  regionsMaxShare: 0.6,
  bridgeCovered: 0.8,
};
const LOGIT_SHIFT = Math.log(0.9 / 0.1) - Math.log(0.6 / 0.4);

export function probabilityToScore(p) {
  const q = Math.min(Math.max(p, 1e-7), 1 - 1e-7);
  return 1 / (1 + Math.exp(-(Math.log(q / (1 - q)) - LOGIT_SHIFT)));
}

export function scoreToProbability(score) {
  if (score <= 0 || score >= 1) return Math.min(Math.max(score, 0), 1);
  return 1 / (1 + Math.exp(-(Math.log(score / (1 - score)) + LOGIT_SHIFT)));
}

// GaussianBlur(3x3, sigma 0.7) on uint8, bit-exact: OpenCV's kernel for it in 8-bit fixed point is
// [54, 148, 54] / 256, applied across then down (exact integer sums), rounded once; the border is
// reflected without repeating the edge (BORDER_REFLECT_101).
export function gaussianBlur3(img) {
  const { width: w, height: h, data } = img;
  const k0 = 54, k1 = 148;
  const col = (x) => (x < 0 ? Math.min(1, w - 1) : x >= w ? Math.max(w - 2, 0) : x);
  const row = (y) => (y < 0 ? Math.min(1, h - 1) : y >= h ? Math.max(h - 2, 0) : y);
  const across = new Int32Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const l = (y * w + col(x - 1)) * 3, c = (y * w + x) * 3, r = (y * w + col(x + 1)) * 3;
      for (let ch = 0; ch < 3; ch++) across[c + ch] = k0 * data[l + ch] + k1 * data[c + ch] + k0 * data[r + ch];
    }
  }
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const u = row(y - 1) * w * 3, c = y * w * 3, d = row(y + 1) * w * 3;
    for (let i = 0; i < w * 3; i++) out[c + i] = (k0 * across[u + i] + k1 * across[c + i] + k0 * across[d + i] + 32768) >> 16;
  }
  return { width: w, height: h, data: out };
}

// image[y1:y2, x1:x2]
export function cropImage(img, x1, y1, x2, y2) {
  const cw = x2 - x1, ch = y2 - y1, data = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) data.set(img.data.subarray(((y1 + y) * img.width + x1) * 3, ((y1 + y) * img.width + x2) * 3), y * cw * 3);
  return { width: cw, height: ch, data };
}

// The search plan (Detector.detect and RetinaFaceDetector._detect): the image shrunk to maxSide
// (INTER_AREA), the scale that finds the smallest faces asked for (`full`: towards a 640 px short
// side, at most 4x, no more than brings minFaceSize to 64 px) and the first pass's scale (`first`:
// brings minFaceSize to 32 px, times 0.8, not under 16 px, never above native size). When `full`
// is more than 5% above `first`, two passes: anchors under 32 px at the first scale with p >= 0.2
// are "maybes", whose regions are enlarged to `full` and searched again.
export function detectorPlan(img, opts) {
  const { maxSide, minFaceSize } = opts;
  const scale = Math.min(1, maxSide / Math.max(img.width, img.height));
  const small = scale === 1 ? img : resizeArea(img, Math.max(1, pyRound(img.width * scale)), Math.max(1, pyRound(img.height * scale)));
  const { width: w, height: h } = small;
  const smallest = Math.max(h, w) < maxSide - 1 ? minFaceSize : 0; // Detector._min_face_hint
  let full = Math.min(DETECTOR.upscaleShortSide / Math.min(h, w), DETECTOR.maxUpscale, maxSide / Math.max(h, w));
  if (smallest > 0) full = Math.min(full, DETECTOR.reliableFacePx / smallest);
  full = Math.max(1, full);
  let first = 1;
  if (opts.twoPass === false) first = full;
  else {
    if (smallest > 0) {
      first = Math.min(1, Math.max(DETECTOR.firstPassFacePx / smallest, Math.min(DETECTOR.firstPassShrink, DETECTOR.onePassFacePx / smallest)));
    }
    first = Math.max(first, Math.min(1, (2 * DETECTOR.align) / Math.max(1, Math.min(h, w))));
  }
  const pKeep = scoreToProbability(opts.scoreThreshold);
  return {
    small, scale, full, first, smallest, pKeep,
    pCandidate: Math.min(pKeep, DETECTOR.candidateProbability),
    twoPass: full > first * 1.05,
  };
}

// The network's input for `image` scaled by `factor` (RetinaFaceDetector._infer): a mild shrink
// (0.5 to 1) is blurred lightly then bilinear, a stronger one area-averaged, an enlargement bilinear;
// padded to a multiple of 32 with the mean colour, BGR minus the mean, NCHW.
export function passInput(image, factor) {
  const { width: w, height: h } = image;
  const sw = Math.max(1, pyRound(w * factor)), sh = Math.max(1, pyRound(h * factor));
  let big = image;
  if (sw !== w || sh !== h) {
    if (factor < 0.5) big = resizeArea(image, sw, sh);
    else big = resizeLinear(factor < 1 ? gaussianBlur3(image) : image, sw, sh);
  }
  const pw = Math.ceil(sw / DETECTOR.align) * DETECTOR.align, ph = Math.ceil(sh / DETECTOR.align) * DETECTOR.align;
  const plane = pw * ph;
  const x = new Float32Array(3 * plane);
  const [mb, mg, mr] = DETECTOR.meanBGR;
  const d = big.data;
  for (let y = 0; y < sh; y++) {
    for (let xx = 0; xx < sw; xx++) {
      const s = (y * sw + xx) * 3, o = y * pw + xx;
      x[o] = d[s + 2] - mb;
      x[plane + o] = d[s + 1] - mg;
      x[2 * plane + o] = d[s] - mr;
    }
  }
  return { tensor: x, dims: [1, 3, ph, pw], sx: sw / w, sy: sh / h };
}

const priorCache = new Map();
export function priors(h, w) {
  const key = `${h}x${w}`;
  if (priorCache.has(key)) return priorCache.get(key);
  const out = [];
  DETECTOR.steps.forEach((step, level) => {
    const ny = Math.ceil(h / step), nx = Math.ceil(w / step);
    for (let i = 0; i < ny; i++) {
      for (let j = 0; j < nx; j++) {
        for (const size of DETECTOR.minSizes[level]) out.push((j + 0.5) * step, (i + 0.5) * step, size, size);
      }
    }
  });
  const p = new Float32Array(out);
  if (priorCache.size > 16) priorCache.clear();
  priorCache.set(key, p);
  return p;
}

function iou(a, b) {
  // cv::dnn::NMSBoxes on Rect2d (x, y, w, h): intersection over union, no +1.
  const x1 = Math.max(a[0], b[0]), y1 = Math.max(a[1], b[1]);
  const x2 = Math.min(a[0] + a[2], b[0] + b[2]), y2 = Math.min(a[1] + a[3], b[1] + b[3]);
  const inter = x2 > x1 && y2 > y1 ? (x2 - x1) * (y2 - y1) : 0;
  const union = a[2] * a[3] + b[2] * b[3] - inter;
  return union > 0 ? inter / union : 0;
}

export function nms(xywh, scores, threshold) {
  const order = [...scores.keys()].filter((i) => scores[i] > 0).sort((i, j) => scores[j] - scores[i]);
  const keep = [];
  for (const i of order) {
    if (keep.every((k) => iou(xywh[i], xywh[k]) <= threshold)) keep.push(i);
  }
  return keep;
}

// Anchors with p >= pMin, decoded into the pixels of the pass's image: {boxes, probs, points}
// (x1, y1, x2, y2; the network probability; 5 landmarks), in the network's output order.
export function decodeRaw(input, loc, conf, ldm, pMin) {
  const [, , ph, pw] = input.dims;
  const pr = priors(ph, pw);
  const n = pr.length / 4;
  const [v0, v1] = DETECTOR.variances;
  let keep = [];
  for (let i = 0; i < n; i++) if (conf[i * 2 + 1] >= pMin) keep.push(i);
  if (keep.length > DETECTOR.preNmsTopK) {
    keep = keep.sort((a, b) => conf[b * 2 + 1] - conf[a * 2 + 1]).slice(0, DETECTOR.preNmsTopK);
  }
  const raw = { boxes: [], probs: [], points: [] };
  const { sx, sy } = input;
  for (const i of keep) {
    const [cx, cy, pw_, ph_] = pr.subarray(i * 4, i * 4 + 4);
    const bx = cx + loc[i * 4] * v0 * pw_, by = cy + loc[i * 4 + 1] * v0 * ph_;
    const bw = pw_ * Math.exp(loc[i * 4 + 2] * v1), bh = ph_ * Math.exp(loc[i * 4 + 3] * v1);
    raw.boxes.push([f32((bx - bw / 2) / sx), f32((by - bh / 2) / sy), f32((bx + bw / 2) / sx), f32((by + bh / 2) / sy)]);
    const pts = [];
    for (let k = 0; k < 5; k++) {
      pts.push([f32((cx + ldm[i * 10 + 2 * k] * v0 * pw_) / sx), f32((cy + ldm[i * 10 + 2 * k + 1] * v0 * ph_) / sy)]);
    }
    raw.points.push(pts);
    raw.probs.push(conf[i * 2 + 1]);
  }
  return raw;
}

const side = (b) => Math.min(b[2] - b[0], b[3] - b[1]);
const toXywh = (b) => [b[0], b[1], b[2] - b[0], b[3] - b[1]];

function selectRaw(raw, pred) {
  const out = { boxes: [], probs: [], points: [] };
  raw.probs.forEach((p, i) => {
    if (pred(i)) { out.boxes.push(raw.boxes[i]); out.probs.push(p); out.points.push(raw.points[i]); }
  });
  return out;
}

// Replace overlapping rectangles by their bounding rectangle until none overlap (_merge_overlapping).
function mergeOverlapping(regions) {
  let merged = true;
  while (merged) {
    merged = false;
    const out = [];
    for (const r of regions) {
      const o = out.find((q) => r[0] < q[2] && q[0] < r[2] && r[1] < q[3] && q[1] < r[3]);
      if (o) {
        o.splice(0, 4, Math.min(o[0], r[0]), Math.min(o[1], r[1]), Math.max(o[2], r[2]), Math.max(o[3], r[3]));
        merged = true;
      } else out.push([...r]);
    }
    regions = out;
  }
  return regions;
}

// Regions (x1, y1, x2, y2) around first-pass anchors too small to be sure of (under 32 px there)
// that do not lie on a face kept (`sure`): RetinaFaceDetector._candidate_regions.
export function candidateRegions(raw, sure, first, w, h) {
  const maybe = selectRaw(raw, (i) => side(raw.boxes[i]) * first < DETECTOR.onePassFacePx);
  if (!maybe.probs.length) return [];
  let boxes = nms(maybe.boxes.map(toXywh), maybe.probs, 0.3).map((i) => maybe.boxes[i]);
  boxes = boxes.filter((b) => {
    const cx = (b[0] + b[2]) / 2, cy = (b[1] + b[3]) / 2;
    return !sure.boxes.some((k) => cx >= k[0] && cx <= k[2] && cy >= k[1] && cy <= k[3]);
  });
  const regions = boxes.map(([x1, y1, x2, y2]) => {
    const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
    const half = Math.max(DETECTOR.regionFaces * Math.max(x2 - x1, y2 - y1), DETECTOR.regionMinPx / first) / 2;
    return [Math.max(0, cx - half), Math.max(0, cy - half), Math.min(w, cx + half), Math.min(h, cy + half)];
  });
  return mergeOverlapping(regions).map((r) => r.map((v) => pyRound(v)));
}

// Boxes (by decreasing score) mostly covered by two or more better faces: the gap between two
// neighbours' half faces that NMS keeps (_bridges).
function bridges(boxes) {
  const out = boxes.map(() => false);
  if (boxes.length < 3) return out;
  boxes.forEach((a, i) => {
    const area = Math.max((a[2] - a[0]) * (a[3] - a[1]), 1e-9);
    let n = 0, total = 0;
    for (let j = 0; j < i; j++) {
      const b = boxes[j];
      const iw = Math.max(Math.min(a[2], b[2]) - Math.max(a[0], b[0]), 0);
      const ih = Math.max(Math.min(a[3], b[3]) - Math.max(a[1], b[1]), 0);
      const c = (iw * ih) / area;
      if (c > 0.2) n += 1;
      total += c;
    }
    out[i] = n >= 2 && total > DETECTOR.bridgeCovered;
  });
  return out;
}

// Faces found by RetinaFace in `img`, as Python's detector finds them: `run(input)` runs the
// network on one passInput and resolves to {loc, conf, ldm} (flat arrays). `timings` gets the
// time spent preparing, in the network and decoding (NMS included), and the number of passes.
export async function detectFaces(img, opts, run, timings = {}) {
  let tPrep = 0, tNet = 0, tDecode = 0, passes = 0;
  const infer = async (image, factor, pMin, offset = [0, 0]) => {
    const t0 = performance.now();
    const input = passInput(image, factor);
    const t1 = performance.now();
    const out = await run(input);
    const t2 = performance.now();
    const raw = decodeRaw(input, out.loc, out.conf, out.ldm, pMin);
    const [ox, oy] = offset;
    if (ox || oy) {
      raw.boxes = raw.boxes.map((b) => [f32(b[0] + ox), f32(b[1] + oy), f32(b[2] + ox), f32(b[3] + oy)]);
      raw.points = raw.points.map((pts) => pts.map(([x, y]) => [f32(x + ox), f32(y + oy)]));
    }
    tPrep += t1 - t0;
    tDecode += performance.now() - t2;
    tNet += t2 - t1;
    passes += 1;
    return raw;
  };
  const t0 = performance.now();
  const plan = detectorPlan(img, opts);
  tPrep += performance.now() - t0;
  const { small, first, full, pKeep } = plan;
  const { width: w, height: h } = small;
  const raw = await infer(small, first, plan.twoPass ? plan.pCandidate : pKeep);
  const sure = selectRaw(raw, (i) => raw.probs[i] >= pKeep);
  let parts = [sure];
  if (plan.twoPass) {
    // A sure face a little under minFaceSize here may measure above it enlarged: look again, like a maybe.
    parts = [selectRaw(sure, (i) => side(sure.boxes[i]) >= plan.smallest)];
    const regions = candidateRegions(raw, parts[0], first, w, h);
    const area = regions.reduce((a, [x1, y1, x2, y2]) => a + (x2 - x1) * (y2 - y1), 0);
    if (regions.length && area > DETECTOR.regionsMaxShare * w * h) parts = [await infer(small, full, pKeep)];
    else for (const [x1, y1, x2, y2] of regions) parts.push(await infer(cropImage(small, x1, y1, x2, y2), full, pKeep, [x1, y1]));
  }
  const t1 = performance.now();
  const all = { boxes: parts.flatMap((p) => p.boxes), probs: parts.flatMap((p) => p.probs), points: parts.flatMap((p) => p.points) };
  const scores = all.probs.map(probabilityToScore);
  let idx = nms(all.boxes.map(toXywh), scores, opts.nmsIou ?? DETECTOR.nmsIou);
  const gaps = bridges(idx.map((i) => all.boxes[i]));
  idx = idx.filter((_, k) => !gaps[k]);
  // Back to the full image, then Detector._filter: clipped, thresholded, sorted, capped.
  const s = plan.scale;
  const clip = (v, hi) => Math.min(Math.max(v, 0), hi);
  const faces = idx.map((i) => {
    const b = all.boxes[i].map((v) => (s === 1 ? v : v / s));
    return {
      box: [clip(b[0], img.width), clip(b[1], img.height), clip(b[2], img.width), clip(b[3], img.height)].map(f32),
      score: scores[i],
      landmarks: all.points[i].map(([x, y]) => (s === 1 ? [x, y] : [x / s, y / s])),
    };
  });
  tDecode += performance.now() - t1;
  Object.assign(timings, { detect_prepare: tPrep, detect_network: tNet, detect_decode: tDecode, detect_passes: passes });
  return faces
    .filter((q) => q.score >= opts.scoreThreshold && Math.min(q.box[2] - q.box[0], q.box[3] - q.box[1]) >= opts.minFaceSize)
    .sort((a, b) => b.score - a.score)
    .slice(0, opts.maxFaces);
}
// -------------------------------------------------------------------------------------------------
// Alignment (emolens/image/align.py): cv2.estimateAffinePartial2D(method=LMEDS) and cv2.warpAffine

export const FER_TEMPLATE = [[15.4, 18.5], [32.6, 18.5], [24.0, 28.5], [17.0, 36.5], [31.0, 36.5]].map(
  ([x, y]) => [f32(f32(x) / 48), f32(f32(y) / 48)],
);
export const BOX_CROP_SCALE = 1.25;

// cv::RNG: multiply-with-carry on 64 bits, seeded with -1 for every estimate (so it is repeatable).
class CvRng {
  constructor() { this.state = 0xffffffffffffffffn; }
  next() {
    this.state = (this.state & 0xffffffffn) * 4164903690n + (this.state >> 32n);
    this.state &= 0xffffffffffffffffn;
    return Number(this.state & 0xffffffffn);
  }
  uniform(a, b) { return a === b ? a : (this.next() % (b - a)) + a; }
}

function similarityFrom2(src, dst, i, j) {
  const [x1, y1] = src[i], [x2, y2] = src[j], [X1, Y1] = dst[i], [X2, Y2] = dst[j];
  const d = 1 / ((x1 - x2) * (x1 - x2) + (y1 - y2) * (y1 - y2));
  const S0 = d * ((X1 - X2) * (x1 - x2) + (Y1 - Y2) * (y1 - y2));
  const S1 = d * ((Y1 - Y2) * (x1 - x2) - (X1 - X2) * (y1 - y2));
  const S2 = d * ((Y1 - Y2) * (x1 * y2 - x2 * y1) - (X1 * y2 - X2 * y1) * (y1 - y2) - (X1 * x2 - X2 * x1) * (x1 - x2));
  const S3 = d * (-(X1 - X2) * (x1 * y2 - x2 * y1) - (Y1 * x2 - Y2 * x1) * (x1 - x2) - (Y1 * y2 - Y2 * y1) * (y1 - y2));
  return [S0, -S1, S2, S1, S0, S3];
}

function errors(src, dst, M) {
  // Affine2DEstimatorCallback::computeError: in float32, with the model cast to float.
  const F = M.map(f32);
  return src.map(([x, y], k) => {
    const a = f32(f32(f32(f32(F[0] * x) + f32(F[1] * y)) + F[2]) - dst[k][0]);
    const b = f32(f32(f32(f32(F[3] * x) + f32(F[4] * y)) + F[5]) - dst[k][1]);
    return f32(f32(a * a) + f32(b * b));
  });
}

// Least squares similarity (a, b, tx, ty) on the inliers: where OpenCV's Levenberg-Marquardt
// refinement of this linear problem converges.
function leastSquaresSimilarity(src, dst) {
  const n = src.length;
  let mx = 0, my = 0, mX = 0, mY = 0;
  for (let k = 0; k < n; k++) { mx += src[k][0]; my += src[k][1]; mX += dst[k][0]; mY += dst[k][1]; }
  mx /= n; my /= n; mX /= n; mY /= n;
  let sxx = 0, sa = 0, sb = 0;
  for (let k = 0; k < n; k++) {
    const x = src[k][0] - mx, y = src[k][1] - my, X = dst[k][0] - mX, Y = dst[k][1] - mY;
    sxx += x * x + y * y;
    sa += x * X + y * Y;
    sb += x * Y - y * X;
  }
  const a = sa / sxx, b = sb / sxx;
  return [a, -b, mX - a * mx + b * my, b, a, mY - b * mx - a * my];
}

// align.similarity_matrix: 2x3 [a, -b, tx, b, a, ty] mapping image points onto the template at `size`.
export function similarityMatrix(landmarks, size) {
  const src = landmarks.map(([x, y]) => [f32(x), f32(y)]);
  if (!src.flat().every(Number.isFinite)) throw new Error("landmarks are not finite");
  const dst = FER_TEMPLATE.map(([x, y]) => [f32(x * size), f32(y * size)]);
  const count = 5;
  const rng = new CvRng();
  const niters = 13; // RANSACUpdateNumIters(0.99, outlier ratio 0.45, 2 points, 2000)
  let best = null, minMedian = Infinity;
  for (let iter = 0; iter < niters; iter++) {
    const i = rng.uniform(0, count);
    let j;
    do { j = rng.uniform(0, count); } while (j === i);
    const model = similarityFrom2(src, dst, i, j);
    if (!model.every(Number.isFinite)) continue;
    const err = errors(src, dst, model).sort((a, b) => a - b);
    const median = err[count >> 1];
    if (median < minMedian) { minMedian = median; best = model; }
  }
  if (best === null) throw new Error("landmarks are degenerate");
  const sigma = Math.max(2.5 * 1.4826 * (1 + 5 / (count - 2)) * Math.sqrt(minMedian), 0.001);
  const t = f32(sigma * sigma);
  const err = errors(src, dst, best);
  const inl = [...err.keys()].filter((k) => err[k] <= t);
  if (inl.length < 2) throw new Error("landmarks are degenerate");
  const M = leastSquaresSimilarity(inl.map((k) => src[k]), inl.map((k) => dst[k]));
  if (!M.every(Number.isFinite)) throw new Error("landmarks are degenerate");
  return M;
}

export function boxMatrix(box, size, scale = BOX_CROP_SCALE) {
  const [x1, y1, x2, y2] = box;
  const side = Math.max(x2 - x1, y2 - y1, 1) * scale;
  const s = size / side;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  return [s, 0, size / 2 - s * cx, 0, s, size / 2 - s * cy].map(f32);
}

export function alignmentMatrix(box, landmarks, size) {
  if (landmarks) {
    try { return similarityMatrix(landmarks, size); } catch { /* the padded box instead, as Python does */ }
  }
  return boxMatrix(box, size);
}

function invertAffine(M) {
  let D = M[0] * M[4] - M[1] * M[3];
  D = D !== 0 ? 1 / D : 0;
  const A11 = M[4] * D, A22 = M[0] * D, A12 = -M[1] * D, A21 = -M[3] * D;
  return [A11, A12, -A11 * M[2] - A12 * M[5], A21, A22, -A21 * M[2] - A22 * M[5]];
}

// Where cv2.warpAffine samples for each output pixel on uint8 (any interpolation but nearest): the
// inverse matrix in 10-bit fixed point, rounded to 1/32 pixel. [X0, Y0, X1, Y1, ...] in 1/32 pixel.
function warpPositions(M, size) {
  const inv = invertAffine(M.map(Number));
  const AB = 1024, roundDelta = AB / 32 / 2;
  const pos = new Int32Array(size * size * 2);
  for (let y = 0, k = 0; y < size; y++) {
    const X0 = cvRound((inv[1] * y + inv[2]) * AB) + roundDelta, Y0 = cvRound((inv[4] * y + inv[5]) * AB) + roundDelta;
    for (let x = 0; x < size; x++) {
      pos[k++] = (X0 + cvRound(inv[0] * x * AB)) >> 5;
      pos[k++] = (Y0 + cvRound(inv[3] * x * AB)) >> 5;
    }
  }
  return pos;
}

const clampIndex = (v, n) => (v < 0 ? 0 : v >= n ? n - 1 : v);

// cv2.warpAffine(INTER_LINEAR, BORDER_REPLICATE) of an RGB image to size x size, in OpenCV's
// fixed point for uint8: source positions in 1/32 pixel, 15-bit bilinear weights.
export function warpAffine(img, M, size) {
  const { width: sw, height: sh, data } = img;
  const pos = warpPositions(M, size);
  const out = new Uint8Array(size * size * 3);
  for (let p = 0; p < size * size; p++) {
    const X = pos[2 * p], Y = pos[2 * p + 1];
    const ix = X >> 5, iy = Y >> 5, fx = X & 31, fy = Y & 31;
    const w00 = (32 - fx) * (32 - fy) * 32, w01 = fx * (32 - fy) * 32, w10 = (32 - fx) * fy * 32, w11 = fx * fy * 32;
    const r0 = clampIndex(iy, sh) * sw, r1 = clampIndex(iy + 1, sh) * sw, c0 = clampIndex(ix, sw), c1 = clampIndex(ix + 1, sw);
    for (let c = 0; c < 3; c++) {
      const v = data[(r0 + c0) * 3 + c] * w00 + data[(r0 + c1) * 3 + c] * w01 +
        data[(r1 + c0) * 3 + c] * w10 + data[(r1 + c1) * 3 + c] * w11;
      out[p * 3 + c] = Math.min(255, (v + 16384) >> 15);
    }
  }
  return { width: size, height: size, data: out };
}

// OpenCV's interpolateCubic (Keys, A = -0.75) at t in [0, 1), in float32 as OpenCV computes it.
function cubicCoeffs(t) {
  const A = -0.75, u = f32(t + 1), v = f32(1 - t);
  const c0 = f32(f32(f32(f32(f32(f32(A * u) - 5 * A) * u) + 8 * A) * u) - 4 * A);
  const c1 = f32(f32(f32(f32(f32((A + 2) * t) - (A + 3)) * t) * t) + 1);
  const c2 = f32(f32(f32(f32(f32((A + 2) * v) - (A + 3)) * v) * v) + 1);
  return [c0, c1, c2, f32(f32(f32(1 - c0) - c1) - c2)];
}

// initInterTab2D(INTER_CUBIC, fixpt): for each 1/32 (fy, fx), the 4x4 kernel (rows vertical) as
// 15-bit shorts (so 1.0 saturates to 32767), then OpenCV's fix-up to a sum of exactly 1 << 15: the
// difference goes to the largest (sum short) or smallest (sum over) of the lower-right 2x2 weights,
// the ones OpenCV searches (from ksize / 2, not the kernel's centre).
let bicubicTab = null;
function bicubicTable() {
  if (bicubicTab) return bicubicTab;
  const c = Array.from({ length: 32 }, (_, i) => cubicCoeffs(i / 32));
  bicubicTab = new Int32Array(32 * 32 * 16);
  for (let i = 0; i < 32; i++) {
    for (let j = 0; j < 32; j++) {
      const w = bicubicTab.subarray((i * 32 + j) * 16, (i * 32 + j) * 16 + 16);
      let sum = 0;
      for (let k = 0; k < 16; k++) {
        w[k] = Math.min(32767, Math.max(-32768, cvRound(f32(c[i][k >> 2] * c[j][k & 3]) * 32768)));
        sum += w[k];
      }
      if (sum === 32768) continue;
      let lo = 10, hi = 10;
      for (const k of [10, 11, 14, 15]) {
        if (w[k] < w[lo]) lo = k;
        else if (w[k] > w[hi]) hi = k;
      }
      if (sum < 32768) w[hi] += 32768 - sum;
      else w[lo] -= sum - 32768;
    }
  }
  return bicubicTab;
}

// cv2.warpAffine(INTER_CUBIC, BORDER_REPLICATE) of an RGB image to size x size, in OpenCV's fixed
// point for uint8: the same 1/32-pixel positions as the bilinear warp, the 4x4 neighbourhood from one
// pixel up-left of the position (edges replicated), 15-bit weights, rounded and saturated.
export function warpAffineCubic(img, M, size) {
  const { width: sw, height: sh, data } = img;
  const pos = warpPositions(M, size);
  const tab = bicubicTable();
  const out = new Uint8Array(size * size * 3);
  const rows = [0, 0, 0, 0], cols = [0, 0, 0, 0];
  for (let p = 0; p < size * size; p++) {
    const X = pos[2 * p], Y = pos[2 * p + 1];
    const sx = (X >> 5) - 1, sy = (Y >> 5) - 1, w = ((Y & 31) * 32 + (X & 31)) * 16;
    for (let k = 0; k < 4; k++) {
      rows[k] = clampIndex(sy + k, sh) * sw;
      cols[k] = clampIndex(sx + k, sw);
    }
    for (let c = 0; c < 3; c++) {
      let v = 0;
      for (let i = 0; i < 4; i++) {
        for (let j = 0; j < 4; j++) v += data[(rows[i] + cols[j]) * 3 + c] * tab[w + i * 4 + j];
      }
      v = (v + 16384) >> 15;
      out[p * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return { width: size, height: size, data: out };
}

// cv2.cvtColor(RGB2GRAY) on uint8: 14-bit fixed-point weights.
export function toGray(img) {
  const n = img.width * img.height, out = new Uint8Array(n), d = img.data;
  for (let i = 0; i < n; i++) out[i] = (d[i * 3] * 4899 + d[i * 3 + 1] * 9617 + d[i * 3 + 2] * 1868 + 8192) >> 14;
  return out;
}

function checkBox(box, width, height) {
  const [x1, y1, x2, y2] = box;
  if (box.length !== 4 || !box.every(Number.isFinite)) throw new Error("face box is not 4 finite numbers");
  if (x2 - x1 < 1 || y2 - y1 < 1) throw new Error("face box is empty");
  if (x2 <= 0 || y2 <= 0 || x1 >= width || y1 >= height) throw new Error(`face box lies outside the ${width}x${height} image`);
}

// align._face_region: the part of the image that the output square maps from.
function faceRegion(img, M, size) {
  const inv = invertAffine(M);
  const xs = [], ys = [];
  for (const [u, v] of [[0, 0], [size, 0], [0, size], [size, size]]) {
    xs.push(inv[0] * u + inv[1] * v + inv[2]);
    ys.push(inv[3] * u + inv[4] * v + inv[5]);
  }
  const { width: w, height: h } = img;
  const x0 = Math.max(Math.floor(Math.min(...xs)) - 2, 0), y0 = Math.max(Math.floor(Math.min(...ys)) - 2, 0);
  let x1 = Math.ceil(Math.max(...xs)) + 2, y1 = Math.ceil(Math.max(...ys)) + 2;
  x1 = Math.min(Math.max(x1, x0 + 1), w);
  y1 = Math.min(Math.max(y1, y0 + 1), h);
  const cw = x1 - x0, ch = y1 - y0, data = new Uint8Array(cw * ch * 3);
  for (let y = 0; y < ch; y++) data.set(img.data.subarray(((y0 + y) * w + x0) * 3, ((y0 + y) * w + x1) * 3), y * cw * 3);
  const shifted = [M[0], M[1], M[2] + M[0] * x0 + M[1] * y0, M[3], M[4], M[5] + M[3] * x0 + M[4] * y0];
  return { region: { width: cw, height: ch, data }, matrix: shifted };
}

// align.align_face: the crop the model reads, as {width, height, channels, data}.
export function alignFace(img, box, landmarks, size, channels = 1) {
  checkBox(box, img.width, img.height);
  let M = alignmentMatrix(box, landmarks, size);
  let src = img;
  const scale = Math.hypot(M[0], M[1]);
  if (scale < 0.5) {
    // Shrinking a big face straight to 48 px aliases: area-average it to about twice the size first.
    const r = faceRegion(img, M, size);
    const factor = 2 * scale;
    const dw = cvRound(r.region.width * factor), dh = cvRound(r.region.height * factor);
    src = resizeArea(r.region, Math.max(dw, 1), Math.max(dh, 1), factor, factor);
    M = [r.matrix[0] / factor, r.matrix[1] / factor, r.matrix[2], r.matrix[3] / factor, r.matrix[4] / factor, r.matrix[5]];
  }
  // align.ENLARGE: a face smaller than the crop is enlarged bicubically, as Python does.
  const crop = scale > 1 ? warpAffineCubic(src, M, size) : warpAffine(src, M, size);
  if (channels === 1) return { width: size, height: size, channels: 1, data: toGray(crop) };
  return { width: size, height: size, channels: 3, data: crop.data };
}

// emolens.classify.emotion.to_input for a batch of crops of one size: (x / range - mean) / std.
export function toInput(crops, spec) {
  const { size, channels, layout } = spec;
  const plane = size * size;
  const out = new Float32Array(crops.length * plane * channels);
  const std = spec.std.map(f32), mean = spec.mean.map(f32);
  const pick = (a, c) => (a.length === 1 ? a[0] : a[c]);
  crops.forEach((crop, n) => {
    for (let c = 0; c < channels; c++) {
      const s = pick(std, c);
      const scale = f32(1 / f32(f32(spec.range) * s)), shift = f32(-pick(mean, c) / s);
      for (let i = 0; i < plane; i++) {
        const v = f32(f32(crop.data[i * channels + c] * scale) + shift);
        if (layout === "NCHW") out[(n * channels + c) * plane + i] = v;
        else out[(n * plane + i) * channels + c] = v;
      }
    }
  });
  return out;
}

// -------------------------------------------------------------------------------------------------
// Camera smoothing without a tracker: each face takes over the emotions of the previous frame's face
// it overlaps most (IoU >= 0.3), mixed in with weight `alpha` for the new reading (as video_smoothing).

export class Smoother {
  constructor(alpha = 0.3, minIou = 0.3) {
    this.alpha = alpha;
    this.minIou = minIou;
    this.previous = [];
  }
  update(faces) {
    const used = new Set();
    const out = faces.map((f) => {
      let best = -1, bestIou = this.minIou;
      const a = [f.box[0], f.box[1], f.box[2] - f.box[0], f.box[3] - f.box[1]];
      this.previous.forEach((p, k) => {
        if (used.has(k) || !p.probs) return;
        const o = iou(a, [p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]]);
        if (o >= bestIou) { best = k; bestIou = o; }
      });
      if (best < 0 || !f.probs) return { ...f, smoothed: f.probs };
      used.add(best);
      const prev = this.previous[best].smoothed || this.previous[best].probs;
      const smoothed = {};
      for (const k of Object.keys(f.probs)) smoothed[k] = this.alpha * f.probs[k] + (1 - this.alpha) * (prev[k] ?? f.probs[k]);
      return { ...f, smoothed };
    });
    this.previous = out;
    return out;
  }
  reset() { this.previous = []; }
}
