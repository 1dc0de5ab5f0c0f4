// EmoLens web page: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Structure: `api` talks to the REST API; a *transport* sends an image or a camera frame and
// resolves with an analysis: `HttpTransport` (a POST per image) for photos, `WebSocketTransport`
// (one socket for the whole camera session, so faces keep track ids and smoothed emotions) for
// live mode, which falls back to HTTP when the socket cannot open; `draw*` functions render; the
// rest wires the page together.
"use strict";

const API = "/api/v1";
const COLORS = {
  angry: "#dc2828", disgust: "#78a01e", fear: "#963cc8", happy: "#fabe00",
  neutral: "#a0a0a0", sad: "#286edc", surprise: "#00c8c8", contempt: "#c86428",
};
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// API access
class ApiError extends Error {
  constructor(status, type, message) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

const api = {
  key: localStorage.getItem("emolens.key") || "",

  async request(method, path, { json, form, signal } = {}) {
    const headers = {};
    if (this.key) headers["X-API-Key"] = this.key;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form) {
      body = form; // the browser sets the multipart boundary
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body, signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "the server cannot be reached");
    }
    const text = await res.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!res.ok) {
      const err = (data && data.error) || {};
      throw new ApiError(res.status, err.type || `http_${res.status}`, err.message || res.statusText);
    }
    return data;
  },
  get(path) { return this.request("GET", path); },
  post(path, json) { return this.request("POST", path, { json }); },
};

// Sends one image (a File or a frame Blob) and resolves with the analysis.
class HttpTransport {
  async analyze(blob, filename = "frame.jpg") {
    const form = new FormData();
    form.append("image", blob, filename);
    return api.request("POST", `${API}/analyze`, { form });
  }
  close() {}
}

// Live frames over one WebSocket (`/api/v1/live`): the server keeps a session per socket, so a face
// keeps its track id and its emotions are smoothed over frames. Same `analyze(blob)` as HttpTransport;
// it resolves with null for a frame the server skipped because a newer one had arrived.
class WebSocketTransport {
  constructor() {
    this.ws = null;
    this.sent = 0; // the server numbers frames the same way: every binary message, from 1
    this.pending = new Map(); // frame number -> {resolve, reject}
  }

  static closeError(ev) {
    const status = { 4401: 401, 4403: 403 }[ev.code] || 0;
    const type = { 401: "unauthorized", 403: "forbidden" }[status] || "network";
    return new ApiError(status, type, ev.reason || `the live connection closed (code ${ev.code})`);
  }

  // Resolves with this transport once the server said "ready"; rejects when the socket cannot open.
  open(timeoutMs = 5000) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = api.key ? `?key=${encodeURIComponent(api.key)}` : ""; // a browser cannot set headers here
    return new Promise((resolve, reject) => {
      let ready = false;
      let ws;
      try {
        ws = new WebSocket(`${scheme}//${location.host}${API}/live${query}`);
      } catch (e) {
        reject(new ApiError(0, "network", `the live connection cannot open (${e.message})`));
        return;
      }
      this.ws = ws;
      const timer = setTimeout(() => {
        reject(new ApiError(0, "network", "the live connection did not open in time"));
        ws.close();
      }, timeoutMs);
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (msg.type === "ready") {
          ready = true;
          clearTimeout(timer);
          resolve(this);
        } else {
          this.answer(msg);
        }
      };
      ws.onclose = (ev) => {
        clearTimeout(timer);
        const err = WebSocketTransport.closeError(ev);
        for (const p of this.pending.values()) p.reject(err);
        this.pending.clear();
        if (!ready) reject(err);
      };
    });
  }

  answer(msg) {
    if ((msg.type !== "result" && msg.type !== "error") || msg.frame == null) return;
    for (const [n, p] of this.pending) {
      if (n < msg.frame) { // answers come in order: an earlier frame with none was skipped
        this.pending.delete(n);
        p.resolve(null);
      }
    }
    const p = this.pending.get(msg.frame);
    if (!p) return;
    this.pending.delete(msg.frame);
    if (msg.type === "result") p.resolve(msg);
    else p.reject(new ApiError(msg.error.status || 0, msg.error.type, msg.error.message));
  }

  get isOpen() {
    return Boolean(this.ws) && this.ws.readyState === WebSocket.OPEN;
  }

  async analyze(blob) {
    const bytes = await blob.arrayBuffer(); // sent as bytes, not a Blob: developer tools show those frames
    if (!this.isOpen) throw new ApiError(0, "network", "the live connection is closed");
    this.sent += 1; // numbered and sent together: the server numbers what arrives in the same order
    const n = this.sent;
    return new Promise((resolve, reject) => {
      this.pending.set(n, { resolve, reject });
      this.ws.send(bytes);
    });
  }

  close() {
    if (this.ws) this.ws.close(1000);
  }
}

// The transport for a camera session: a WebSocket when one opens, else a POST per frame.
async function openLiveTransport() {
  if (typeof WebSocket === "function") {
    try {
      return { transport: await new WebSocketTransport().open(), note: "" };
    } catch (e) {
      return { transport: new HttpTransport(), note: e.message };
    }
  }
  return { transport: new HttpTransport(), note: "no WebSocket in this browser" };
}

// ---------------------------------------------------------------------------------------------
// State
const state = {
  info: null,
  keyInfo: null, // {key_id, name, scope} of the key in use
  analysis: null, // the analysis shown
  media: null, // the <img> or <video> the overlay sits on
  transport: new HttpTransport(),
  live: null,
};

function setStatus(text, kind = "") {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

function canWrite() {
  return state.keyInfo && (state.keyInfo.scope === "write" || state.keyInfo.scope === "admin");
}

// ---------------------------------------------------------------------------------------------
// Drawing
function drawBoxes(analysis, width, height) {
  const canvas = $("overlay");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const line = Math.max(2, Math.round(Math.max(width, height) / 300));
  const font = Math.max(12, Math.round(Math.max(width, height) / 40));
  ctx.font = `600 ${font}px system-ui, sans-serif`;
  ctx.textBaseline = "bottom";
  let drawn = 0;
  const texts = [];
  for (const f of analysis.faces) {
    if (f.box.some((v) => v === null)) continue;
    const [x1, y1, x2, y2] = f.box;
    const color = COLORS[f.label] || "#ffffff";
    ctx.lineWidth = line;
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const name = f.track_id != null ? `#${f.track_id} ` : `${f.index}: `; // live faces carry a track id
    const text = f.label ? `${name}${f.label} ${Math.round(f.confidence * 100)}%` : `${name}?`;
    texts.push(text);
    const tw = ctx.measureText(text).width + 8;
    const ty = y1 - font - 6 > 0 ? y1 : y2 + font + 6;
    ctx.fillStyle = color;
    ctx.fillRect(x1 - line / 2, ty - font - 6, tw, font + 6);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x1 + 4, ty - 3);
    drawn += 1;
  }
  canvas.dataset.boxes = String(drawn);
  canvas.dataset.labels = texts.join(" | ");
}

function drawThumb(canvas, media, box) {
  const ctx = canvas.getContext("2d");
  const [x1, y1, x2, y2] = box;
  const side = Math.max(x2 - x1, y2 - y1) * 1.1;
  const cx = (x1 + x2) / 2, cy = (y1 + y2) / 2;
  ctx.fillStyle = "#222";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  try {
    ctx.drawImage(media, cx - side / 2, cy - side / 2, side, side, 0, 0, canvas.width, canvas.height);
  } catch { /* the media is gone */ }
}

function renderFaces(analysis, media, { frozen = true } = {}) {
  const list = $("faces");
  list.replaceChildren();
  const n = analysis.faces.length;
  $("face-count").textContent = n ? `(${n})` : "(none found)";
  $("feedback-hint").hidden = canWrite() || !n;
  const labels = (state.info && state.info.labels) || analysis.labels;
  const tpl = $("face-template");
  for (const f of analysis.faces) {
    const li = tpl.content.firstElementChild.cloneNode(true);
    li.dataset.index = f.index;
    li.querySelector(".face-index").textContent = `#${f.track_id != null ? f.track_id : f.index}`;
    li.querySelector(".face-label").textContent = f.label || "unreadable";
    li.querySelector(".face-conf").textContent = f.label ? `${Math.round(f.confidence * 100)}%` : (f.error || "");
    li.querySelector(".face-label").style.borderColor = COLORS[f.label] || "#888";
    const probs = li.querySelector(".probs");
    for (const [name, p] of Object.entries(f.probs).sort((a, b) => b[1] - a[1]).slice(0, 3)) {
      const bar = document.createElement("span");
      bar.className = "prob";
      bar.textContent = `${name} ${Math.round(p * 100)}%`;
      bar.style.setProperty("--p", `${Math.round(p * 100)}%`);
      bar.style.setProperty("--c", COLORS[name] || "#888");
      probs.append(bar);
    }
    const select = li.querySelector(".fb-label");
    for (const name of labels) {
      if (name === f.label) continue;
      const opt = document.createElement("option");
      opt.value = name;
      opt.textContent = name;
      select.append(opt);
    }
    if (!f.box.some((v) => v === null)) drawThumb(li.querySelector(".thumb"), media, f.box);
    const status = li.querySelector(".fb-status");
    const buttons = li.querySelectorAll("button, select");
    const send = async (body) => {
      buttons.forEach((b) => { b.disabled = true; });
      status.textContent = "saving…";
      try {
        const rec = await api.post(`${API}/feedback`, {
          analysis_id: analysis.analysis_id, face: f.index, source: "web", ...body,
        });
        status.textContent = rec.is_correction ? `saved: ${rec.predicted} → ${rec.label}` : `saved: ${rec.label} confirmed`;
        status.className = "fb-status ok";
        li.classList.add("done");
        refreshFeedback();
      } catch (e) {
        status.textContent = e.message;
        status.className = "fb-status bad";
        buttons.forEach((b) => { b.disabled = false; });
      }
    };
    li.querySelector(".fb-correct").addEventListener("click", () => send({ correct: true }));
    li.querySelector(".fb-wrong").addEventListener("click", () => send({ label: select.value }));
    if (!frozen || !f.label) {
      buttons.forEach((b) => { b.disabled = true; });
      if (!frozen) status.textContent = "freeze the frame to give feedback";
    }
    list.append(li);
  }
}

// Object URLs keep their image alive until revoked: one at a time is shown.
function showBlob(img, blob) {
  if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
  return new Promise((resolve) => {
    img.onload = resolve;
    img.onerror = resolve; // the server says what is wrong with it
    img.src = URL.createObjectURL(blob);
  });
}

function show(media) {
  for (const el of [$("photo"), $("video")]) el.hidden = el !== media;
  $("stage-empty").hidden = Boolean(media);
  state.media = media;
}

// ---------------------------------------------------------------------------------------------
// Photo mode
async function analyzeFile(file) {
  stopLive();
  const img = $("photo");
  await showBlob(img, file);
  show(img);
  $("overlay").dataset.boxes = "0";
  $("overlay").getContext("2d").clearRect(0, 0, $("overlay").width, $("overlay").height);
  $("faces").replaceChildren();
  setStatus("analysing…", "busy");
  try {
    const a = await state.transport.analyze(file, file.name || "photo.jpg");
    state.analysis = a;
    drawBoxes(a, a.width, a.height);
    renderFaces(a, img);
    const ms = Object.values(a.timings_ms).reduce((s, v) => s + v, 0);
    setStatus(`${a.faces.length} face${a.faces.length === 1 ? "" : "s"} · model ${a.model} · ${Math.round(ms)} ms`, "ok");
  } catch (e) {
    img.hidden = true;
    $("stage-empty").hidden = false;
    setStatus(e.message, "bad");
  }
}

// ---------------------------------------------------------------------------------------------
// Camera (live) mode: grab a frame, send it, draw the answer; at most one frame in flight.
function startLive() {
  if (state.live) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser cannot use a camera here (a camera needs https or localhost)", "bad");
    return;
  }
  const video = $("video");
  const grab = document.createElement("canvas");
  const live = {
    stream: null, timer: null, running: true, frames: 0, since: performance.now(), last: null, transport: null,
  };
  state.live = live;
  navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false })
    .then(async (stream) => {
      if (!live.running) { stream.getTracks().forEach((t) => t.stop()); return; }
      live.stream = stream;
      video.srcObject = stream;
      await video.play();
      await connect();
      if (!live.running) return;
      show(video);
      $("cam-stop").disabled = false;
      $("cam-freeze").disabled = false;
      $("cam-start").disabled = true;
      tick();
    })
    .catch((e) => { state.live = null; setStatus(`camera: ${e.message}`, "bad"); });

  async function connect() {
    const { transport, note } = await openLiveTransport();
    if (!live.running) { transport.close(); return; }
    live.transport = transport;
    const ws = transport instanceof WebSocketTransport;
    $("panel-camera").dataset.transport = ws ? "websocket" : "http";
    setStatus(ws ? "live" : `live, a request per frame (${note})`, "ok");
  }

  async function tick() {
    if (!live.running) return;
    const started = performance.now();
    if (live.transport instanceof WebSocketTransport && !live.transport.isOpen) await connect(); // the server restarted, say
    if (!live.running) return;
    const w = video.videoWidth, h = video.videoHeight;
    if (w && h) {
      grab.width = w;
      grab.height = h;
      grab.getContext("2d").drawImage(video, 0, 0, w, h);
      const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
      try {
        const a = await live.transport.analyze(blob);
        if (!live.running) return;
        if (!a) throw new ApiError(0, "dropped", "frame skipped"); // not with one frame in flight, but still
        live.last = { analysis: a, blob };
        state.analysis = a;
        drawBoxes(a, a.width, a.height);
        renderFaces(a, video, { frozen: false });
        live.frames += 1;
        const secs = (performance.now() - live.since) / 1000;
        $("cam-rate").textContent = `${(live.frames / secs).toFixed(1)} frames/s analysed`;
      } catch (e) {
        if (!live.running) return; // stopped while a frame was out: its answer does not matter
        setStatus(e.message, "bad");
      }
    }
    const period = 1000 / Number($("cam-fps").value);
    live.timer = setTimeout(tick, Math.max(0, period - (performance.now() - started)));
  }
}

function stopLive() {
  const live = state.live;
  if (!live) return;
  live.running = false;
  clearTimeout(live.timer);
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  if (live.transport) live.transport.close();
  state.live = null;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
  $("cam-freeze").disabled = true;
  $("cam-rate").textContent = "";
  return live;
}

// Freeze: stop the camera and keep the last analysed frame as a still photo, with feedback controls.
async function freezeLive() {
  const live = stopLive();
  if (!live || !live.last) { setStatus("no analysed frame yet", "bad"); return; }
  const img = $("photo");
  await showBlob(img, live.last.blob);
  show(img);
  let a = live.last.analysis;
  if (!a.analysis_id) {
    // The socket's results are not kept by the server, and feedback names a face of an analysis it
    // keeps: analyse the frame once more over HTTP, and keep the live track ids on its faces.
    setStatus("keeping this frame…", "busy");
    try {
      a = withTrackIds(await new HttpTransport().analyze(live.last.blob), a);
    } catch (e) {
      drawBoxes(a, a.width, a.height);
      renderFaces(a, img, { frozen: false });
      setStatus(`frame frozen, but it cannot take feedback: ${e.message}`, "bad");
      return;
    }
  }
  state.analysis = a;
  drawBoxes(a, a.width, a.height);
  renderFaces(a, img);
  setStatus("frame frozen: give feedback on its faces", "ok");
}

function iou(a, b) {
  const w = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
  const h = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
  if (w <= 0 || h <= 0) return 0;
  const inter = w * h;
  return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter);
}

// Each face of `analysis` takes the track id of the live face it overlaps most, if any.
function withTrackIds(analysis, live) {
  const tracked = live.faces.filter((f) => f.track_id != null && !f.box.some((v) => v === null));
  for (const f of analysis.faces) {
    if (f.box.some((v) => v === null)) continue;
    let best = null, bestIou = 0.3;
    for (const t of tracked) {
      const o = iou(f.box, t.box);
      if (o > bestIou) { best = t; bestIou = o; }
    }
    if (best) f.track_id = best.track_id;
  }
  return analysis;
}

// ---------------------------------------------------------------------------------------------
// Side panels
async function refreshFeedback() {
  try {
    const s = await api.get(`${API}/feedback/stats`);
    $("fb-total").textContent = s.total;
    $("fb-corrections").textContent = s.corrections;
    $("fb-confirmations").textContent = s.confirmations;
    $("fb-progress").textContent = s.corrections >= s.min_feedback
      ? `enough corrections to fine-tune (${s.min_feedback} needed)`
      : `${s.min_feedback - s.corrections} more correction(s) before fine-tuning`;
    const bars = $("fb-labels");
    bars.replaceChildren();
    const max = Math.max(1, ...Object.values(s.by_label));
    for (const [label, n] of Object.entries(s.by_label)) {
      const li = document.createElement("li");
      li.textContent = `${label} ${n}`;
      li.style.setProperty("--p", `${Math.round((100 * n) / max)}%`);
      li.style.setProperty("--c", COLORS[label] || "#888");
      bars.append(li);
    }
  } catch (e) {
    $("fb-progress").textContent = e.message;
  }
}

function metricText(m) {
  const parts = [];
  for (const [k, v] of Object.entries(m || {})) {
    if (typeof v === "number") parts.push(`${k.replace(/_/g, " ")} ${v <= 1 && v >= 0 && !Number.isInteger(v) ? (v * 100).toFixed(1) + "%" : v}`);
    else if (typeof v === "boolean") parts.push(`${k.replace(/_/g, " ")}: ${v ? "yes" : "no"}`);
  }
  return parts.join(" · ");
}

async function refreshModels() {
  const admin = state.keyInfo && state.keyInfo.scope === "admin";
  try {
    const m = await api.get(`${API}/models`);
    $("serving").textContent = m.serving;
    const body = $("models");
    body.replaceChildren();
    $("models-empty").hidden = m.versions.length > 0;
    for (const v of m.versions.slice().reverse()) {
      const tr = document.createElement("tr");
      if (v.active) tr.className = "active";
      const cells = [v.name + (v.active ? " (active)" : ""), v.parent ? `${v.parent}, ${v.source}` : v.source, metricText(v.metrics)];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement("td");
      if (admin && !v.active) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Promote";
        b.addEventListener("click", () => adminAction(`${API}/models/${encodeURIComponent(v.name)}/promote`, `${v.name} promoted`));
        td.append(b);
      }
      tr.append(td);
      body.append(tr);
    }
  } catch (e) {
    $("serving").textContent = e.message;
  }
  $("admin").hidden = !admin;
  $("finetune").hidden = !(admin && state.info && state.info.finetune_from_web);
}

async function adminAction(path, done) {
  try {
    await api.post(path);
    setStatus(done, "ok");
  } catch (e) {
    setStatus(e.message, "bad");
  }
  refreshModels();
}

async function startFinetune() {
  const out = $("job");
  $("finetune").disabled = true;
  try {
    let job = await api.post(`${API}/models/finetune`);
    out.textContent = `fine-tuning: ${job.status}…`;
    while (job.status === "queued" || job.status === "running") {
      await new Promise((r) => setTimeout(r, 2000));
      job = await api.get(`${API}/jobs/${job.id}`);
      out.textContent = `fine-tuning: ${job.status}…`;
    }
    if (job.status === "succeeded") {
      const r = job.result || {};
      out.textContent = `new version ${r.candidate}: ${r.promoted ? "passed the gates and promoted" : "did not pass the gates; kept, not promoted"}`;
    } else {
      out.textContent = `fine-tuning failed: ${job.error && job.error.message}`;
    }
  } catch (e) {
    out.textContent = e.message;
  }
  $("finetune").disabled = false;
  refreshModels();
}

// ---------------------------------------------------------------------------------------------
// API key
async function useKey(key) {
  api.key = key.trim();
  state.keyInfo = null;
  if (api.key) {
    try {
      state.keyInfo = await api.get(`${API}/auth/key`);
      localStorage.setItem("emolens.key", api.key);
      $("key-status").textContent = `${state.keyInfo.name} (${state.keyInfo.scope})`;
      $("key-status").className = "ok";
    } catch (e) {
      $("key-status").textContent = e.message;
      $("key-status").className = "bad";
      api.key = "";
      localStorage.removeItem("emolens.key");
    }
  } else {
    localStorage.removeItem("emolens.key");
    $("key-status").textContent = "";
  }
  $("key-forget").hidden = !state.keyInfo;
  $("key-input").value = "";
  $("key-input").placeholder = state.keyInfo ? "key in use (paste another to switch)" : "emk_…  (needed to store feedback)";
  if (state.analysis && state.media === $("photo")) renderFaces(state.analysis, $("photo"));
  refreshModels();
}

// ---------------------------------------------------------------------------------------------
// Wiring
function selectTab(camera) {
  $("tab-upload").setAttribute("aria-selected", String(!camera));
  $("tab-camera").setAttribute("aria-selected", String(camera));
  $("panel-upload").hidden = camera;
  $("panel-camera").hidden = !camera;
  if (!camera) stopLive();
}

async function init() {
  $("tab-upload").addEventListener("click", () => selectTab(false));
  $("tab-camera").addEventListener("click", () => selectTab(true));
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) analyzeFile(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) analyzeFile(e.dataTransfer.files[0]);
  });
  $("cam-start").addEventListener("click", startLive);
  $("cam-stop").addEventListener("click", () => { stopLive(); setStatus("camera stopped"); });
  $("cam-freeze").addEventListener("click", freezeLive);
  $("key-form").addEventListener("submit", (e) => { e.preventDefault(); useKey($("key-input").value); });
  $("key-forget").addEventListener("click", () => useKey(""));
  $("rollback").addEventListener("click", () => adminAction(`${API}/models/rollback`, "rolled back"));
  $("finetune").addEventListener("click", startFinetune);

  await useKey(api.key); // first: a stale stored key would make every read fail
  try {
    state.info = await api.get(`${API}/info`);
  } catch (e) {
    setStatus(e.message, "bad");
  }
  refreshModels();
  refreshFeedback();
  document.body.dataset.ready = "true";
}

init();
