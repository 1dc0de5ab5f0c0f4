// EmoLens on-device app: service worker. The server fills in VERSION and PRECACHE (/app/sw.js).
// The app shell, ONNX Runtime Web and both models are cached at install, so the app opens and
// analyses with no network; the API (/api/...) is never cached: it needs the server.
const VERSION = "__VERSION__";
const PRECACHE = [/*PRECACHE*/];
const CACHE = `emolens-app-${VERSION}`;
// Asked for again first, so a new model or settings reach the app when the server is there.
const FRESH = new Set(["/app/", "/app/config.json"]);

self.addEventListener("install", (event) => {
  // Each file on its own: where reads need a key, config.json and the models are refused here and
  // kept instead when the page fetches them with its key (cacheFirst below).
  event.waitUntil(
    caches.open(CACHE)
      .then((cache) => Promise.all(PRECACHE.map((url) => cache.add(url).catch(() => null))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith("emolens-app-") && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) cache.put(request, response.clone());
    return response;
  } catch (err) {
    const cached = await cache.match(request, { ignoreSearch: request.mode === "navigate" });
    if (cached) return cached;
    throw err;
  }
}

async function cacheFirst(request) {
  const cache = await caches.open(CACHE);
  const cached = await cache.match(request);
  if (cached) return cached;
  const response = await fetch(request);
  if (response.ok) cache.put(request, response.clone()); // e.g. the WebGPU runtime, on first use
  return response;
}

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !url.pathname.startsWith("/app/")) return;
  event.respondWith(FRESH.has(url.pathname) || event.request.mode === "navigate" ? networkFirst(event.request) : cacheFirst(event.request));
});
