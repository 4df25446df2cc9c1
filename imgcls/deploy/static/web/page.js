// The page of an imgcls web export: model.onnx runs in onnxruntime-web (WebAssembly) with the class names,
// preprocessing and temperature of imgcls.json, on images dropped or chosen and on camera frames. Nothing is sent
// anywhere: the page needs only a static file server. A multi-label model (imgcls.json has thresholds) shows a
// chip for every label whose probability (the network's "probabilities" output) reaches its threshold.
"use strict";

const TOPK = 5;
const MAX_PIXELS = 89478485;   // data/images.MAX_IMAGE_PIXELS: imgcls refuses larger images, so the page does too
const model = {session: null, card: null, busy: Promise.resolve()};
const queue = [];
let running = false, done = 0, failed = 0, total = 0, generation = 0, stream = null;

const $ = (id) => document.getElementById(id);
function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;   // textContent: file and class names are never parsed as HTML
  return node;
}
const pct = (p) => (100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1) + "%";

function setState(state, message) {
  document.body.dataset.state = state;
  $("state").className = state === "failed" ? "failed" : "";
  $("state").textContent = message;
  for (const id of ["choose", "camera-start"]) $(id).disabled = state !== "ready";
}

// ------------------------------------------------------------------------------------------------ the model

async function loadModel() {
  if (location.protocol === "file:") {
    setState("failed", "Browsers do not run WebAssembly from file:// pages: serve this folder " +
             "(python -m http.server, in the folder) and open http://localhost:8000");
    return;
  }
  try {
    if (typeof ort === "undefined") throw new Error("ort/ort.wasm.min.js did not load");
    ort.env.wasm.wasmPaths = new URL("ort/", location.href).href;
    // WebAssembly threads need a cross-origin isolated page (COOP/COEP headers), which plain static hosts do not give
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    const card = download("imgcls.json").then((r) => r.json());
    const session = ort.InferenceSession.create("model.onnx", {executionProviders: ["wasm"]});
    [model.card, model.session] = await Promise.all([card, session]);
    showModel(model.card);
    const [, height, width] = model.card.preprocess.input_size;
    await run(new Float32Array(3 * height * width));   // the first run sets up the kernels: done before "ready"
    window.imgclsReadyMs = performance.now();
    setState("ready", "Ready: drop images, choose them or use the camera. They never leave this browser.");
  } catch (e) {
    setState("failed", `The model could not be loaded: ${e.message || e}`);
  }
}

async function download(name) {
  const response = await fetch(name);
  if (!response.ok) throw new Error(`${name}: HTTP ${response.status}`);
  return response;
}

function showModel(card) {
  $("model-name").textContent = card.model_name;
  $("runtime").textContent = `onnxruntime-web ${ort.env.versions.web} (WebAssembly, in this browser)`;
  $("weights").textContent = card.web.weights;
  const acc = card.metrics && card.metrics.val_accuracy;
  $("val-accuracy").textContent = typeof acc === "number" ? pct(acc) : "not recorded";
  for (const name of card.class_names) $("classes").appendChild(el("span", "chip", name));
  document.title = "imgcls \u00b7 " + card.model_name;
}

// The network's outputs for one preprocessed image, by name; one run at a time, as a WebAssembly session allows.
function run(input) {
  const [, height, width] = model.card.preprocess.input_size;
  const result = model.busy.then(async () => {
    const session = model.session;
    const tensor = new ort.Tensor("float32", input, [1, 3, height, width]);
    const outputs = await session.run({[session.inputNames[0]]: tensor});
    return outputs;   // logits first; a multi-label network also gives "probabilities", its sigmoid
  });
  model.busy = result.catch(() => {});
  return result;
}

// Softmax of the logits over the calibration temperature, as imgcls predict computes it.
function probabilities(logits, temperature) {
  const scaled = Array.from(logits, (z) => z / temperature);
  const top = Math.max(...scaled);
  const exp = scaled.map((z) => Math.exp(z - top));
  const sum = exp.reduce((a, b) => a + b, 0);
  return exp.map((e) => e / sum);
}

const multiLabel = () => Array.isArray(model.card.thresholds);

// Every class's probability: the softmax of the logits, or a multi-label network's own sigmoid output (the card's
// outputs say the graph computes it, so the page never applies it a second time).
async function classify(img, jpeg) {
  const card = model.card;
  const input = Preprocess.modelInput(img, card.preprocess, card.web.pillow, jpeg);
  const outputs = await run(input);
  if (multiLabel()) return Array.from(outputs.probabilities.data);
  return probabilities(outputs[model.session.outputNames[0]].data, card.temperature);
}

// The labels present: each label whose probability reaches its threshold (metrics.labels_present, imgcls's one
// decision rule).
const labelsPresent = (probs) => model.card.class_names.filter((name, i) => probs[i] >= model.card.thresholds[i]);

// ------------------------------------------------------------------------------------------------ pixels

// RGB bytes of an image, video frame or bitmap; transparent areas on white, as imgcls reads them.
function pixelsOf(source, width, height) {
  const canvas = el("canvas");
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d", {willReadFrequently: true});
  context.fillStyle = "#fff";
  context.fillRect(0, 0, width, height);
  context.drawImage(source, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data, rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i];
    rgb[j + 1] = rgba[i + 1];
    rgb[j + 2] = rgba[i + 2];
  }
  return Preprocess.image(width, height, rgb);
}

// A file's pixels as imgcls reads them: upright (EXIF), no colour profile applied; and whether it is a JPEG
// (read by its content, as imgcls does, whatever its name says).
async function decode(file) {
  if (file.size === 0) throw new Error("empty file (0 bytes)");
  const head = new Uint8Array(await file.slice(0, 3).arrayBuffer());
  const jpeg = head[0] === 0xff && head[1] === 0xd8 && head[2] === 0xff;
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {colorSpaceConversion: "none", premultiplyAlpha: "none",
                                            imageOrientation: "from-image"});
  } catch (e) {
    throw new Error("not an image this browser can read (a damaged file, or a format such as TIFF that " +
                    "browsers do not decode)");
  }
  try {
    if (bitmap.width * bitmap.height > MAX_PIXELS) {
      throw new Error(`too large: ${bitmap.width}x${bitmap.height} pixels is over the limit of ` +
                      MAX_PIXELS.toLocaleString("en"));
    }
    return {img: pixelsOf(bitmap, bitmap.width, bitmap.height), jpeg};
  } finally {
    bitmap.close();
  }
}

// ------------------------------------------------------------------------------------------------ results

function updateSummary() {
  const waiting = total - done - failed;
  $("summary").textContent = total === 0 ? "" :
    `${done} classified` + (failed ? `, ${failed} failed` : "") + (waiting ? `, ${waiting} in progress` : "");
  $("clear").hidden = total === 0;
}

function addCard(name, preview) {
  const card = el("article", "card");
  const box = el("div", "preview");
  box.appendChild(preview);
  const body = el("div", "body");
  body.appendChild(el("div", "filename", name));
  const status = el("div", "status", "Waiting\u2026");
  body.appendChild(status);
  card.append(box, body);
  return {card, body, status};
}

function filePreview(file) {
  const img = el("img");
  img.alt = file.name;
  img.src = URL.createObjectURL(file);
  img.onload = () => URL.revokeObjectURL(img.src);
  img.onerror = () => {   // the browser cannot show it: say so instead of a broken icon
    URL.revokeObjectURL(img.src);
    img.replaceWith(el("span", "status", "no preview"));
  };
  return img;
}

// The top classes as bars (the serve page's); each row carries its exact probability for scripts.
// A multi-label model's bars show every label, those present in the accent colour.
function bars(probs) {
  const present = multiLabel() ? labelsPresent(probs) : [];
  const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]).slice(0, multiLabel() ? undefined : TOPK);
  const box = el("div", multiLabel() ? "bars multi" : "bars");
  for (const i of order) {
    const name = model.card.class_names[i], p = probs[i];
    const row = el("div", present.includes(name) ? "row present" : "row"), track = el("div", "track"), fill = el("div", "fill");
    fill.style.width = Math.max(0.5, 100 * p).toFixed(1) + "%";
    track.appendChild(fill);
    row.append(el("span", "name", name), track, el("span", "p", pct(p)));
    row.title = `${name}: ${(100 * p).toFixed(2)}%`;
    row.dataset.class = name;
    row.dataset.probability = String(p);
    box.appendChild(row);
  }
  return {box, top: order[0]};
}

// A chip for each label present (a multi-label model's answer).
function chips(probs) {
  const present = labelsPresent(probs), box = el("div", "labels");
  for (const name of present) box.appendChild(el("span", "chip", name));
  if (present.length === 0) box.appendChild(el("span", "status", "no label reaches its threshold"));
  return {box, present};
}

function showResult(view, probs) {
  view.status.remove();
  if (multiLabel()) {
    const {box, present} = chips(probs);
    view.body.append(box, bars(probs).box);
    view.card.dataset.labels = present.join(";");
    view.card.dataset.probabilities = JSON.stringify(probs);
    return;
  }
  const {box, top} = bars(probs);
  const top1 = el("div", "top1");
  top1.append(el("span", "predicted-label", model.card.class_names[top]), el("span", "pct", pct(probs[top])));
  view.body.append(top1, box);
  view.card.dataset.predicted = model.card.class_names[top];
  view.card.dataset.probabilities = JSON.stringify(probs);   // every class's, in the model's order, for scripts
}

function showError(view, message) {
  view.status.remove();
  view.card.classList.add("failed");
  view.body.appendChild(el("div", "error", message));
}

// ------------------------------------------------------------------------------------------------ the queue

async function work() {
  running = true;
  while (queue.length) {
    const [view, pixels, gen] = queue.shift();
    view.status.textContent = "Classifying\u2026";
    try {
      const {img, jpeg} = await pixels();
      showResult(view, await classify(img, jpeg));
      if (gen === generation) done++;
    } catch (e) {
      showError(view, e.message || String(e));
      if (gen === generation) failed++;
    }
    updateSummary();
  }
  running = false;
}

// Newest first on the page; `pixels` gives {img, jpeg} when its turn comes.
function enqueue(views) {
  const batch = document.createDocumentFragment();
  for (const [view, pixels] of views) {
    batch.appendChild(view.card);
    queue.push([view, pixels, generation]);
    total++;
  }
  $("results").prepend(batch);
  updateSummary();
  if (!running) work();
}

function addFiles(files) {
  if (document.body.dataset.state !== "ready") return;
  enqueue(Array.from(files, (file) => [addCard(file.name, filePreview(file)), () => decode(file)]));
}

// ------------------------------------------------------------------------------------------------ the camera

async function startCamera() {
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: {facingMode: "environment"}, audio: false});
  } catch (e) {
    setState("ready", `The camera is not available here (${e.name}: ${e.message}). Images still work.`);
    return;
  }
  $("video").srcObject = stream;
  await $("video").play();
  $("camera").hidden = false;
  $("camera-start").hidden = true;
  watch();
}

function frame() {
  const video = $("video");
  return pixelsOf(video, video.videoWidth, video.videoHeight);
}

// Classifies the live picture, one frame after another, while the camera is on.
async function watch() {
  while (stream) {
    const video = $("video");
    if (video.readyState >= 2 && video.videoWidth) {
      try {
        const probs = await classify(frame(), false);
        if (stream) $("live").replaceChildren(...(multiLabel() ? [chips(probs).box] : []), bars(probs).box);
        $("live").dataset.frames = String(Number($("live").dataset.frames || 0) + 1);
      } catch (e) {
        $("live").replaceChildren(el("div", "error", e.message || String(e)));
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 30));
  }
}

function stopCamera() {
  if (stream) stream.getTracks().forEach((track) => track.stop());
  stream = null;
  $("video").srcObject = null;
  $("camera").hidden = true;
  $("camera-start").hidden = false;
  $("live").replaceChildren();
}

function snapshot() {
  const img = frame(), canvas = el("canvas");
  canvas.width = img.width;
  canvas.height = img.height;
  canvas.getContext("2d").drawImage($("video"), 0, 0);
  canvas.style.maxWidth = "100%";
  canvas.style.maxHeight = "100%";
  enqueue([[addCard(`camera ${new Date().toLocaleTimeString()}`, canvas), async () => ({img, jpeg: false})]]);
}

// ------------------------------------------------------------------------------------------------ wiring

function wire() {
  const drop = $("drop"), input = $("file-input");
  $("choose").addEventListener("click", (e) => { e.stopPropagation(); input.click(); });
  $("camera-start").addEventListener("click", (e) => { e.stopPropagation(); startCamera(); });
  drop.addEventListener("click", () => { if (document.body.dataset.state === "ready") input.click(); });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); }
  });
  input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => addFiles(e.dataTransfer.files));
  // A file dropped outside the zone would make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  $("clear").addEventListener("click", () => {
    $("results").replaceChildren();
    queue.length = 0;
    generation++;
    total = done = failed = 0;
    updateSummary();
  });
  $("snapshot").addEventListener("click", snapshot);
  $("camera-stop").addEventListener("click", stopCamera);
  // getUserMedia exists on secure pages only (https, or localhost)
  $("camera-start").hidden = !(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

wire();
setState("loading", "Loading the model\u2026");
loadModel();
