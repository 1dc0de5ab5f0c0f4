// EmoLens on-device app: the page. Photos and camera frames are analysed in the browser by
// engine.js; "Analyse on the server" sends them to the REST API instead, for comparison.
// Corrections are kept in IndexedDB and leave the device only when the user sends them.
import { Engine, loadRuntime } from "./engine.js";
import { Smoother, decide } from "./pipeline.js";

const $ = (id) => document.getElementById(id);
const COLORS = {
  angry: "#dc2828", disgust: "#78a01e", fear: "#963cc8", happy: "#fabe00",
  neutral: "#a0a0a0", sad: "#286edc", surprise: "#00c8c8", contempt: "#c86428", uncertain: "#ffffff",
};
const state = { config: null, engine: null, img: null, bitmap: null, last: null, camera: null };

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

// -------------------------------------------------------------------------------------------------
// Images

function toRgb(rgba, width, height) {
  // Transparent pixels are composited on white, as emolens.image.io does.
  const data = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    const a = rgba[i + 3];
    if (a === 255) { data[j] = rgba[i]; data[j + 1] = rgba[i + 1]; data[j + 2] = rgba[i + 2]; }
    else for (let c = 0; c < 3; c++) data[j + c] = Math.round((rgba[i + c] * a + 255 * (255 - a)) / 255);
  }
  return { width, height, data };
}

function pixelsOf(source, width, height) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, width, height);
  return { canvas, img: toRgb(ctx.getImageData(0, 0, width, height).data, width, height) };
}

async function decodePhoto(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none" });
  } catch {
    throw new Error(`${file.name || "file"}: not an image, or a format this browser cannot read`);
  }
  const limit = state.config.settings.max_pixels;
  if (bitmap.width * bitmap.height > limit) {
    throw new Error(`${file.name}: ${bitmap.width}x${bitmap.height} is above the limit of ${limit.toLocaleString()} pixels`);
  }
  return { bitmap, img: pixelsOf(bitmap, bitmap.width, bitmap.height).img };
}

// -------------------------------------------------------------------------------------------------
// Analysis: on the device, or on the server for comparison

const serverMode = () => $("server-mode").checked;

async function analyzeOnServer(blob, name) {
  const form = new FormData();
  form.append("image", blob, name);
  let res;
  try {
    res = await fetch("/api/v1/analyze", { method: "POST", body: form });
  } catch {
    throw new Error("the server cannot be reached: untick “Analyse on the server” to work on this device");
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error((data && data.error && data.error.message) || `server error ${res.status}`);
  return data;
}

async function analyze(img, blob, name) {
  const t0 = performance.now();
  const result = serverMode() ? await analyzeOnServer(blob, name) : await state.engine.analyze(img);
  result.where = serverMode() ? "server" : "device";
  result.total_ms = performance.now() - t0;
  return result;
}

// -------------------------------------------------------------------------------------------------
// Drawing and the face list

function draw(source, result, labels) {
  const view = $("view");
  view.width = result.width;
  view.height = result.height;
  const ctx = view.getContext("2d");
  ctx.drawImage(source, 0, 0, result.width, result.height);
  const lw = Math.max(2, Math.round(Math.max(result.width, result.height) / 300));
  ctx.lineWidth = lw;
  ctx.font = `${Math.max(12, lw * 7)}px system-ui, sans-serif`;
  result.faces.forEach((f, i) => {
    const [x1, y1, x2, y2] = f.box;
    const color = COLORS[labels[i]] || "#ffffff";
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    // Numbered from 0 as the CLI, the server page and the REST API number them (what --face takes).
    const text = labels[i] ? `${f.index}: ${labels[i]} ${Math.round(100 * (f.confidence || 0))}%` : `${f.index}: ?`;
    const th = Math.max(12, lw * 7) + 4;
    ctx.fillStyle = color;
    ctx.fillRect(x1, Math.max(0, y1 - th), ctx.measureText(text).width + 8, th);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x1 + 4, Math.max(0, y1 - th) + th - 5);
  });
  view.dataset.boxes = String(result.faces.length);
  view.dataset.labels = labels.join(",");
  view.dataset.where = result.where;
}

function showFaces(result, labels, withFixes) {
  const list = $("faces");
  list.replaceChildren();
  $("face-count").textContent = `${result.faces.length} · ${result.where === "server" ? "on the server" : "on this device"}, ` +
    `${Math.round(result.total_ms)} ms`;
  result.faces.forEach((f, i) => {
    const li = $("face-template").content.firstElementChild.cloneNode(true);
    li.dataset.index = f.index;
    li.querySelector(".face-index").textContent = `#${f.index}`;
    li.querySelector(".face-label").textContent = labels[i] || f.error || "?";
    li.querySelector(".face-conf").textContent = f.confidence != null ? `${Math.round(100 * f.confidence)}%` : "";
    li.querySelector(".probs").textContent = Object.entries(f.probs || {})
      .sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(" · ");
    const select = li.querySelector(".fix-label");
    for (const l of state.engine.labels) select.append(new Option(l, l));
    li.querySelector(".actions").hidden = !withFixes;
    li.querySelector(".fix").addEventListener("click", () => keepCorrection(f, select.value, li.querySelector(".fix-status")));
    list.append(li);
  });
}

async function runPhoto(file) {
  setStatus("Analysing…");
  try {
    const { bitmap, img } = await decodePhoto(file);
    const result = await analyze(img, file, file.name);
    state.img = img;
    state.last = result;
    const labels = result.faces.map((f) => f.label);
    draw(bitmap, result, labels);
    showFaces(result, labels, true);
    setStatus(`${result.faces.length} face(s) in ${file.name}`, "ok");
  } catch (e) {
    $("view").dataset.boxes = "0";
    setStatus(e.message, "bad");
  }
}

// -------------------------------------------------------------------------------------------------
// Camera: every frame is detected afresh (no tracker); emotions are smoothed over frames by overlap.

async function startCamera() {
  if (!navigator.mediaDevices) {
    setStatus("No camera here: browsers allow it only on https:// or http://localhost", "bad");
    return;
  }
  const video = $("video");
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    setStatus(`The camera could not start: ${e.message}`, "bad");
    return;
  }
  video.srcObject = stream;
  await video.play();
  const cam = { stream, running: true, smoother: new Smoother(state.config.settings.video_smoothing), frames: 0, times: [] };
  state.camera = cam;
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  setStatus("Camera on");
  while (cam.running) {
    const side = state.config.settings.video_max_side;
    const f = Math.min(1, side / Math.max(video.videoWidth, video.videoHeight));
    const w = Math.round(video.videoWidth * f), h = Math.round(video.videoHeight * f);
    if (!w || !h) { await new Promise((r) => setTimeout(r, 50)); continue; }
    const { canvas, img } = pixelsOf(video, w, h);
    try {
      const blob = serverMode() ? await canvas.convertToBlob({ type: "image/jpeg", quality: 0.9 }) : null;
      const result = await analyze(img, blob, "frame.jpg");
      const faces = cam.smoother.update(result.faces);
      const labels = faces.map((q) => (q.smoothed ? decide(q.smoothed, state.engine.meta.thresholds) : q.label));
      state.img = img;
      state.last = { ...result, faces };
      draw(canvas, result, labels);
      showFaces(state.last, labels, false);
      cam.frames++;
      cam.times.push(performance.now());
      if (cam.times.length > 10) cam.times.shift();
      if (cam.times.length > 1) {
        const fps = (1000 * (cam.times.length - 1)) / (cam.times.at(-1) - cam.times[0]);
        $("cam-rate").textContent = `${fps.toFixed(1)} frames/s`;
      }
    } catch (e) {
      setStatus(e.message, "bad");
      await new Promise((r) => setTimeout(r, 500));
    }
    await new Promise((r) => requestAnimationFrame(r));
  }
}

function stopCamera() {
  const cam = state.camera;
  if (!cam) return;
  cam.running = false;
  cam.stream.getTracks().forEach((t) => t.stop());
  state.camera = null;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
  setStatus("Camera off: the last frame stays, with its faces");
  showFaces(state.last || { faces: [] }, (state.last?.faces || []).map((f) => f.label), true);
}

// -------------------------------------------------------------------------------------------------
// Corrections: IndexedDB until the user sends them

function store(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open("emolens", 1);
    open.onupgradeneeded = () => open.result.createObjectStore("corrections", { keyPath: "id", autoIncrement: true });
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction("corrections", mode);
      const req = fn(tx.objectStore("corrections"));
      tx.oncomplete = () => resolve(req && req.result);
      tx.onerror = () => reject(tx.error);
    };
  });
}

async function updatePending() {
  const n = await store("readonly", (s) => s.count());
  $("pending").textContent = `${n} kept on this device`;
  $("send").disabled = $("discard").disabled = n === 0;
  document.body.dataset.pending = String(n);
}

async function keepCorrection(face, label, status) {
  try {
    const crop = state.engine.feedbackCrop(state.img, face);
    const canvas = new OffscreenCanvas(crop.width, crop.height);
    const rgba = new Uint8ClampedArray(crop.width * crop.height * 4);
    for (let i = 0, j = 0; j < crop.data.length; i += 4, j += 3) {
      rgba[i] = crop.data[j]; rgba[i + 1] = crop.data[j + 1]; rgba[i + 2] = crop.data[j + 2]; rgba[i + 3] = 255;
    }
    canvas.getContext("2d").putImageData(new ImageData(rgba, crop.width, crop.height), 0, 0);
    const png = await canvas.convertToBlob({ type: "image/png" });
    await store("readwrite", (s) => s.add({ png, label, predicted: face.label, created: new Date().toISOString() }));
    status.textContent = `kept: ${face.label} → ${label}`;
    status.className = "fix-status";
    await updatePending();
  } catch (e) {
    status.textContent = `not kept: ${e.message}`;
    status.className = "fix-status bad";
  }
}

async function sendCorrections(ev) {
  ev.preventDefault();
  const key = $("key").value.trim();
  const out = $("send-status");
  if (!key) { out.textContent = "Paste an API key with the write scope (emolens keys create NAME)"; out.className = "bad"; return; }
  const items = await store("readonly", (s) => s.getAll());
  let sent = 0;
  for (const item of items) {
    const form = new FormData();
    form.append("image", item.png, "face.png");
    form.append("label", item.label);
    if (item.predicted) form.append("predicted", item.predicted);
    let res;
    try {
      res = await fetch("/api/v1/feedback/crop", { method: "POST", headers: { "X-API-Key": key }, body: form });
    } catch {
      out.textContent = `Sent ${sent}; the server cannot be reached: the rest stay here`;
      out.className = "bad";
      await updatePending();
      return;
    }
    if (!res.ok) {
      const data = await res.json().catch(() => null);
      out.textContent = `Sent ${sent}; the server refused the next: ${(data && data.error && data.error.message) || res.status}`;
      out.className = "bad";
      await updatePending();
      return;
    }
    await store("readwrite", (s) => s.delete(item.id));
    sent++;
  }
  out.textContent = `Sent ${sent} correction(s) to the server`;
  out.className = "ok";
  await updatePending();
}

// -------------------------------------------------------------------------------------------------

function selectTab(name) {
  for (const t of ["photo", "camera"]) {
    $(`tab-${t}`).setAttribute("aria-selected", String(t === name));
    $(`panel-${t}`).hidden = t !== name;
  }
  if (name !== "camera") stopCamera();
}

async function boot() {
  $("tab-photo").addEventListener("click", () => selectTab("photo"));
  $("tab-camera").addEventListener("click", () => selectTab("camera"));
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    e.target.value = ""; // choosing the same photo again (say, after switching to the server) runs again
    if (file) runPhoto(file);
  });
  $("cam-start").addEventListener("click", startCamera);
  $("cam-stop").addEventListener("click", stopCamera);
  $("send-form").addEventListener("submit", sendCorrections);
  $("discard").addEventListener("click", async () => { await store("readwrite", (s) => s.clear()); await updatePending(); });
  if ("serviceWorker" in navigator) {
    navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch((e) => console.warn("no offline use:", e.message));
  }
  const params = new URLSearchParams(location.search);
  const query = params.get("model") ? `?model=${encodeURIComponent(params.get("model"))}` : "";
  // Where the server requires a key for reads: the key saved by the page at / (same origin).
  const saved = localStorage.getItem("emolens.key");
  const headers = saved ? { "X-API-Key": saved } : {};
  try {
    const res = await fetch(`/app/config.json${query}`, { headers });
    state.config = await res.json();
    if (!res.ok) throw new Error(state.config?.error?.message || `HTTP ${res.status}`);
    if (!state.config.built) throw new Error(`this server's copy of the app has no ONNX Runtime: run \`${state.config.build_command}\``);
    const runtime = await loadRuntime({
      vendor: state.config.vendor, backend: params.get("backend") || "auto", threads: Number(params.get("threads")) || 0,
    });
    state.engine = await Engine.create(state.config, runtime, headers);
    const how = runtime.providers[0] === "webgpu" ? "WebGPU" : `WASM, ${runtime.threads} thread${runtime.threads > 1 ? "s" : ""}`;
    $("engine").textContent = `Model ${state.config.model.name} · ${how} · ONNX Runtime Web ${state.config.onnxruntime_web}`;
    document.body.dataset.backend = runtime.providers[0];
    document.body.dataset.threads = String(runtime.threads);
    await updatePending();
    window.emolensApp = { state, engine: state.engine, analyze: (img) => state.engine.analyze(img) }; // for tests and benchmarks
    document.body.dataset.ready = "true";
  } catch (e) {
    $("engine").textContent = `The app cannot start: ${e.message}`;
    document.body.dataset.ready = "error";
  }
}

boot();
