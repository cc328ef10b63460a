"use strict";
// The playground: one form per endpoint, generated from the input schema in /openapi.json, sent
// through fal's queue routes (the key typed here, kept in localStorage, goes in Authorization),
// followed on the status stream, and the video played when it is done. Plain JS, no build step.

const KEY_STORAGE = "openreel.apiKey";
const $ = (id) => document.getElementById(id);
const url = (path) => new URL(path, document.baseURI).href;

let openapi = null;
let form = null; // {endpointId, fields: [{name, read, element}]}
let cancelUrl = null; // of the request being followed

class ApiError extends Error {
  constructor(status, body) {
    super(describeError(status, body));
    this.status = status;
    this.body = body;
  }
}

function describeError(status, body) {
  const detail = body && typeof body === "object" && "detail" in body ? body.detail : body;
  if (Array.isArray(detail)) {
    return `${status}: ` + detail.map((d) => `${(d.loc || []).slice(1).join(".") || "body"}: ${d.msg}`).join("\n");
  }
  return `${status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`;
}

function headers(json) {
  const result = {};
  const key = $("api-key").value.trim();
  if (key) result.Authorization = `Key ${key}`;
  if (json) result["Content-Type"] = "application/json";
  return result;
}

async function api(target, options = {}) {
  const response = await fetch(target, options);
  const text = await response.text();
  let body = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: keep the text for the error message
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// ---- schema to form ---------------------------------------------------------------------

function resolve(schema) {
  let current = schema || {};
  while (current.$ref) {
    const resolved = openapi.components.schemas[current.$ref.split("/").pop()];
    const { $ref, ...siblings } = current;
    current = { ...resolved, ...siblings };
  }
  return current;
}

function inputSchema(endpointId) {
  const operation = openapi.paths[`/queue/${endpointId}`].post;
  return resolve(operation.requestBody.content["application/json"].schema);
}

function element(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) node.append(child);
  return node;
}

class FieldError extends Error {}

function buildForm(endpointId) {
  const schema = inputSchema(endpointId);
  const required = new Set(schema.required || []);
  const order = schema["x-fal-order-properties"] || Object.keys(schema.properties);
  const fields = order.map((name) => buildField(name, schema.properties[name], required.has(name)));
  $("fields").replaceChildren(...fields.map((field) => field.element));
  form = { endpointId, fields };
  updateSnippet();
}

function buildField(name, property, required) {
  const variants = property.anyOf ? property.anyOf.map(resolve) : [resolve(property)];
  const concrete = variants.filter((variant) => variant.type !== "null");
  const initial = property.examples ? property.examples[0] : property.default;
  const id = `field-${name}`;
  let widget;
  if (concrete.length === 1) {
    widget = scalarWidget(id, name, concrete[0], initial, required);
  } else if (concrete.length === 2 && concrete.some((v) => v.enum) && concrete.some((v) => v.properties)) {
    widget = choiceWidget(id, concrete.find((v) => v.enum), concrete.find((v) => v.properties), initial);
  } else {
    widget = jsonWidget(id, initial, required);
  }
  const label = element("label", { for: id, class: "name" }, [
    element("span", { text: name }),
    element("span", { class: "type", text: typeName(concrete) }),
    ...(required ? [element("span", { class: "required", text: "required" })] : []),
  ]);
  const hint = element("p", { class: "hint", text: describe(property, concrete) });
  const container = element("div", { class: "field", "data-field": name }, [label, hint, widget.element]);
  return { name, element: container, read: widget.read };
}

function typeName(variants) {
  return variants.map((v) => (v.enum ? "enum" : v.title && v.properties ? v.title : v.type)).join(" | ");
}

function describe(property, variants) {
  // Bounds past 2^53 (a seed's 2^63 - 1) would print rounded: they are left out.
  const shown = (bound) => (bound !== undefined && Math.abs(bound) <= Number.MAX_SAFE_INTEGER ? bound : undefined);
  const ranges = variants
    .map((v) => [shown(v.minimum ?? v.exclusiveMinimum), shown(v.maximum)])
    .filter(([low, high]) => low !== undefined && high !== undefined)
    .map(([low, high]) => `${low} to ${high}`);
  const description = property.description || "";
  return ranges.length ? `${description} (${ranges.join(", ")})` : description;
}

function scalarWidget(id, name, schema, initial, required) {
  if (schema.enum) return enumWidget(id, schema.enum, initial, required);
  if (schema.type === "boolean") {
    const box = element("input", { id, type: "checkbox" });
    box.checked = Boolean(initial);
    return { element: element("label", { class: "check" }, [box, "enabled"]), read: () => ({ value: box.checked }) };
  }
  if (schema.type === "integer" || schema.type === "number") {
    const input = element("input", {
      id,
      type: "number",
      min: schema.minimum ?? schema.exclusiveMinimum,
      max: schema.maximum,
      step: schema.type === "integer" ? 1 : "any",
    });
    if (initial !== undefined && initial !== null) input.value = initial;
    return { element: input, read: () => readNumber(name, input, schema.type, required) };
  }
  if (schema.type === "string") {
    const long = name.includes("prompt");
    const input = long ? element("textarea", { id, rows: 4 }) : element("input", { id, type: "text" });
    if (initial !== undefined && initial !== null) input.value = initial;
    const read = () => (input.value === "" && !required ? { omit: true } : { value: input.value });
    if (name.endsWith("_url")) return { element: uploadRow(name, input), read };
    return { element: input, read };
  }
  return jsonWidget(id, initial, required);
}

function readNumber(name, input, type, required) {
  if (input.value === "") {
    if (required) throw new FieldError(`${name} is required`);
    return { omit: true };
  }
  const value = Number(input.value);
  if (!Number.isFinite(value) || (type === "integer" && !Number.isInteger(value))) {
    throw new FieldError(`${name} must be ${type === "integer" ? "a whole number" : "a number"}`);
  }
  return { value };
}

function enumWidget(id, options, initial, required) {
  const select = element("select", { id });
  if (!required && initial === undefined) select.append(element("option", { value: "", text: "(default)" }));
  for (const option of options) select.append(element("option", { value: option, text: option }));
  if (initial !== undefined) select.value = initial;
  return { element: select, read: () => (select.value === "" ? { omit: true } : { value: select.value }) };
}

// A named choice or a custom object, as fal's ImageSize | Enum: a select plus the object's fields.
function choiceWidget(id, named, custom, initial) {
  const CUSTOM = "custom";
  const select = element("select", { id });
  for (const option of named.enum) select.append(element("option", { value: option, text: option }));
  select.append(element("option", { value: CUSTOM, text: `custom ${custom.title || "value"}` }));
  const inputs = Object.entries(custom.properties).map(([key, property]) => {
    const step = property.type === "integer" ? 1 : "any";
    const input = element("input", { id: `${id}-${key}`, type: "number", step });
    const value = initial && typeof initial === "object" ? initial[key] : property.default;
    if (value !== undefined) input.value = value;
    return { key, input, type: property.type };
  });
  const row = element("div", { class: "row" }, inputs.map(({ key, input }) => element("label", {}, [key, input])));
  select.value = typeof initial === "string" ? initial : CUSTOM;
  const sync = () => (row.hidden = select.value !== CUSTOM);
  select.addEventListener("change", sync);
  sync();
  const read = () => {
    if (select.value !== CUSTOM) return { value: select.value };
    const value = {};
    for (const { key, input, type } of inputs) value[key] = readNumber(key, input, type, true).value;
    return { value };
  };
  return { element: element("div", {}, [select, row]), read };
}

function jsonWidget(id, initial, required) {
  const area = element("textarea", { id, rows: 3, class: "json", spellcheck: "false" });
  if (initial !== undefined && initial !== null) area.value = JSON.stringify(initial);
  const read = () => {
    if (area.value.trim() === "") {
      if (required) throw new FieldError(`${id.slice(6)} is required`);
      return { omit: true };
    }
    try {
      return { value: JSON.parse(area.value) };
    } catch (error) {
      throw new FieldError(`${id.slice(6)}: not valid JSON (${error.message})`);
    }
  };
  return { element: area, read };
}

// A URL field with a file picker that uploads through fal's storage routes and fills in the URL.
function uploadRow(name, input) {
  const accept = name.startsWith("image") ? "image/*" : name.startsWith("video") ? "video/*" : undefined;
  const picker = element("input", { type: "file", class: "upload", accept, "data-upload-for": name });
  const status = element("span", { class: "upload-status" });
  picker.addEventListener("change", async () => {
    const file = picker.files[0];
    if (!file) return;
    status.textContent = "uploading…";
    try {
      input.value = await upload(file);
      status.textContent = `uploaded ${file.name} (${Math.ceil(file.size / 1024)} KiB)`;
      updateSnippet();
    } catch (error) {
      status.textContent = `upload failed: ${error.message}`;
    }
  });
  return element("div", {}, [element("div", { class: "row" }, [input, picker]), status]);
}

async function upload(file) {
  const kind = file.type || "application/octet-stream";
  const { upload_url: uploadUrl, file_url: fileUrl } = await api(url("rest/storage/upload/initiate"), {
    method: "POST",
    headers: headers(true),
    body: JSON.stringify({ file_name: file.name, content_type: kind }),
  });
  await api(uploadUrl, { method: "PUT", headers: { "Content-Type": kind }, body: file });
  return fileUrl;
}

function readInput() {
  const input = {};
  for (const field of form.fields) {
    const { value, omit } = field.read();
    if (!omit) input[field.name] = value;
  }
  return input;
}

// ---- the snippet ------------------------------------------------------------------------

function pythonLiteral(value, depth = 0) {
  const pad = "    ".repeat(depth + 1);
  const close = "    ".repeat(depth);
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value !== "object") return JSON.stringify(value);
  const items = Array.isArray(value)
    ? value.map((item) => pythonLiteral(item, depth + 1))
    : Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}: ${pythonLiteral(item, depth + 1)}`);
  const [open, end] = Array.isArray(value) ? ["[", "]"] : ["{", "}"];
  return items.length ? `${open}\n${items.map((item) => pad + item).join(",\n")},\n${close}${end}` : open + end;
}

function updateSnippet() {
  let input;
  try {
    input = readInput();
  } catch (error) {
    $("snippet").textContent = `# ${error.message}`;
    return;
  }
  const host = new URL(document.baseURI).host + new URL(document.baseURI).pathname.replace(/\/$/, "");
  $("snippet").textContent = [
    "# fal_client needs HTTPS: start openreel with --tls-cert and --tls-key (README).",
    `# export FAL_KEY=${$("api-key").value.trim() ? "<your key>" : "anything"}`,
    `# export FAL_QUEUE_RUN_HOST=${host}/queue FAL_RUN_HOST=${host}/run`,
    "import fal_client",
    "",
    "result = fal_client.subscribe(",
    `    ${JSON.stringify(form.endpointId)},`,
    `    arguments=${pythonLiteral(input, 1)},`,
    "    with_logs=True,",
    "    on_queue_update=print,",
    ")",
    "print(result)",
  ].join("\n");
}

async function copySnippet() {
  const text = $("snippet").textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // no clipboard API (plain http on a non-local host): copy through a selection instead
    const area = element("textarea");
    area.value = text;
    document.body.append(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }
  $("copy").textContent = "Copied";
  setTimeout(() => ($("copy").textContent = "Copy"), 1500);
}

// ---- running a request ------------------------------------------------------------------

function showStatus(status, logs, replaceLogs) {
  const failed = status.status === "COMPLETED" && status.error;
  $("status").textContent = failed ? "FAILED" : status.status;
  $("status").className = `badge ${failed ? "FAILED" : status.status}`;
  $("position").textContent =
    status.status === "IN_QUEUE" ? `position ${status.queue_position} in the queue` : "";
  const lines = (logs || []).map((log) => `${(log.timestamp || "").slice(11, 19)}  ${log.message}`);
  const box = $("logs");
  if (replaceLogs) box.textContent = "";
  if (lines.length) {
    box.textContent += lines.join("\n") + "\n";
    box.scrollTop = box.scrollHeight;
  }
  const steps = [...box.textContent.matchAll(/step (\d+)\/(\d+)/g)].pop();
  if (status.status === "COMPLETED") $("progress").value = failed ? 0 : 1;
  else if (steps) $("progress").value = Number(steps[1]) / Number(steps[2]);
}

// The status stream, read with fetch: EventSource cannot send the Authorization header.
async function streamStatus(statusUrl) {
  const response = await fetch(`${statusUrl}/stream?logs=1`, { headers: headers(false) });
  if (!response.ok) throw new ApiError(response.status, await response.text());
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let last = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return last;
    buffer += value;
    const events = buffer.split(/\r?\n\r?\n/);
    buffer = events.pop();
    for (const event of events) {
      const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5));
      if (!data.length) continue;
      last = JSON.parse(data.join("\n"));
      showStatus(last, last.logs, false);
    }
  }
}

async function follow(submitted) {
  let last = null;
  try {
    last = await streamStatus(submitted.status_url);
  } catch {
    // polled below
  }
  // The stream broke off (a proxy that buffers, a dropped connection): poll with the full logs.
  while (!last || last.status !== "COMPLETED") {
    await new Promise((done) => setTimeout(done, 500));
    last = await api(`${submitted.status_url}?logs=1`, { headers: headers(false) });
    showStatus(last, last.logs, true);
  }
  return last;
}

function findVideo(value) {
  if (!value || typeof value !== "object") return null;
  if (typeof value.url === "string" && String(value.content_type || "").startsWith("video/")) return value.url;
  if (value.video && typeof value.video.url === "string") return value.video.url;
  for (const item of Object.values(value)) {
    const found = findVideo(item);
    if (found) return found;
  }
  return null;
}

function resetOutput() {
  $("logs").textContent = "";
  $("progress").value = 0;
  $("position").textContent = "";
  $("request-id").textContent = "";
  $("run-error").hidden = true;
  $("result-box").hidden = true;
  const video = $("video");
  video.hidden = true;
  video.removeAttribute("src");
  video.load();
}

function showError(target, message) {
  $(target).textContent = message;
  $(target).hidden = false;
}

async function run(event) {
  event.preventDefault();
  $("form-error").hidden = true;
  let input;
  try {
    input = readInput();
  } catch (error) {
    showError("form-error", error.message);
    return;
  }
  updateSnippet();
  resetOutput();
  $("submit").disabled = true;
  try {
    const submitted = await api(url(`queue/${form.endpointId}`), {
      method: "POST",
      headers: headers(true),
      body: JSON.stringify(input),
    });
    cancelUrl = submitted.cancel_url;
    $("cancel").disabled = false;
    $("request-id").textContent = submitted.request_id;
    showStatus(submitted, [], true);
    const final = await follow(submitted);
    $("cancel").disabled = true;
    if (final.error) {
      let message = `${final.error_type || "error"}: ${final.error}`;
      try {
        await api(submitted.response_url, { headers: headers(false) });
      } catch (error) {
        message = error.message;
      }
      showError("run-error", message);
      return;
    }
    const result = await api(submitted.response_url, { headers: headers(false) });
    $("result").textContent = JSON.stringify(result, null, 2);
    $("result-box").hidden = false;
    const videoUrl = findVideo(result);
    if (videoUrl) {
      const video = $("video");
      video.src = videoUrl;
      video.hidden = false;
      video.play().catch(() => {}); // autoplay refused: the controls are there
    }
  } catch (error) {
    if (error instanceof ApiError && error.status === 422) showError("form-error", error.message);
    else showError("run-error", error.message);
    $("status").textContent = "FAILED";
    $("status").className = "badge FAILED";
  } finally {
    $("submit").disabled = false;
    $("cancel").disabled = true;
    cancelUrl = null;
  }
}

async function cancel() {
  if (!cancelUrl) return;
  $("cancel").disabled = true;
  try {
    await api(cancelUrl, { method: "PUT", headers: headers(false) });
  } catch (error) {
    showError("run-error", error.message);
  }
}

// ---- start ------------------------------------------------------------------------------

async function start() {
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("input", () => {
    localStorage.setItem(KEY_STORAGE, $("api-key").value.trim());
    updateSnippet();
  });
  try {
    openapi = await api(url("openapi.json"));
  } catch (error) {
    showError("form-error", `Cannot read the API description: ${error.message}`);
    return;
  }
  const endpoints = (openapi.tags || []).filter((tag) => tag["x-fal-metadata"]).map((tag) => tag.name);
  const select = $("endpoint");
  for (const id of endpoints) select.append(element("option", { value: id, text: id }));
  const wanted = new URLSearchParams(location.search).get("endpoint");
  if (endpoints.includes(wanted)) select.value = wanted;
  select.addEventListener("change", () => buildForm(select.value));
  $("form").addEventListener("submit", run);
  $("form").addEventListener("input", updateSnippet);
  $("form").addEventListener("change", updateSnippet);
  $("cancel").addEventListener("click", cancel);
  $("copy").addEventListener("click", copySnippet);
  if (endpoints.length) buildForm(select.value);
  document.body.dataset.ready = "true";
}

start();
