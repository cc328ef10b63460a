// Drives the official @fal-ai/client against an openreel server and prints one JSON result.
// Usage: node fal_client_check.mjs <mode: middleware|proxy> <base url> <scenario> <input json>
// Credentials come from FAL_KEY, as for any user of the client; TLS trust from NODE_EXTRA_CA_CERTS.
import { readFile } from "node:fs/promises";
import { createFalClient, ApiError, ValidationError } from "@fal-ai/client";

const [mode, base, scenario, inputJson] = process.argv.slice(2);
const input = JSON.parse(inputJson || "{}");
const APP = "fal-ai/cogvideox-5b";

// Method and path of every call the client makes, for scenarios that show which routes they took.
const calls = [];
const recordingFetch = (input, init) => {
  calls.push(`${init?.method ?? "GET"} ${new URL(String(input.url ?? input)).pathname}`);
  return fetch(input, init);
};

function clientFor(mode) {
  if (mode === "middleware") {
    const rewrite = (url) =>
      url
        .replace(/^https:\/\/queue\.fal\.run\//, `${base}/queue/`)
        .replace(/^https:\/\/fal\.run\//, `${base}/run/`)
        .replace(/^https:\/\/rest\.(alpha\.)?fal\.ai\//, `${base}/rest/`);
    return createFalClient({
      fetch: recordingFetch,
      requestMiddleware: async (req) => ({ ...req, url: rewrite(req.url) }),
    });
  }
  if (mode === "proxy") {
    return createFalClient({ fetch: recordingFetch, proxyUrl: { url: `${base}/api/fal/proxy`, when: "always" } });
  }
  throw new Error(`unknown mode ${mode}`);
}

const fal = clientFor(mode);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function describeError(error) {
  return {
    name: error.constructor.name,
    isValidationError: error instanceof ValidationError,
    isApiError: error instanceof ApiError,
    status: error.status,
    body: error.body,
    requestId: error.requestId,
    fieldErrors: error instanceof ValidationError ? error.fieldErrors : undefined,
    promptErrors: error instanceof ValidationError ? error.getFieldErrors("prompt") : undefined,
  };
}

async function waitFor(requestId, wanted) {
  for (;;) {
    const status = await fal.queue.status(APP, { requestId, logs: true });
    if (wanted.includes(status.status)) return status;
    await sleep(100);
  }
}

const scenarios = {
  async run() {
    const { data, requestId } = await fal.run(APP, { input });
    return { data, requestId };
  },

  async subscribe() {
    const updates = [];
    const { data, requestId } = await fal.subscribe(APP, {
      input,
      logs: true,
      pollInterval: 100,
      onQueueUpdate: (update) => updates.push({ status: update.status, logs: (update.logs || []).map((l) => l.message) }),
    });
    return { data, requestId, updates };
  },

  async subscribeStreaming() {
    const updates = [];
    const { data, requestId } = await fal.subscribe(APP, {
      input,
      logs: true,
      mode: "streaming",
      onQueueUpdate: (update) => updates.push({ status: update.status, logs: (update.logs || []).map((l) => l.message) }),
    });
    return { data, requestId, updates };
  },

  async queue() {
    const submitted = await fal.queue.submit(APP, { input, priority: "normal" });
    const { request_id: requestId } = submitted;
    const firstStatus = await fal.queue.status(APP, { requestId, logs: true });
    const done = await fal.queue.subscribeToStatus(APP, { requestId, logs: true, mode: "polling", pollInterval: 100 });
    const result = await fal.queue.result(APP, { requestId });
    return { submitted, firstStatus: firstStatus.status, done, result };
  },

  async streamStatus() {
    const { request_id: requestId } = await fal.queue.submit(APP, { input });
    const stream = await fal.queue.streamStatus(APP, { requestId, logs: true });
    const events = [];
    stream.on("data", (event) => events.push({ status: event.status, logs: (event.logs || []).map((l) => l.message) }));
    const last = await stream.done();
    return { events, last };
  },

  // Two slow requests occupy the two workers; a low-priority third one stays queued.
  async cancel() {
    const slow = { ...input };
    const running = [];
    for (let i = 0; i < 2; i++) running.push((await fal.queue.submit(APP, { input: slow })).request_id);
    const queued = (await fal.queue.submit(APP, { input: slow, priority: "low" })).request_id;
    for (const id of running) await waitFor(id, ["IN_PROGRESS"]);
    const queuedBefore = (await fal.queue.status(APP, { requestId: queued, logs: false })).status;
    await fal.queue.cancel(APP, { requestId: queued });
    for (const id of running) await fal.queue.cancel(APP, { requestId: id });
    const finals = [];
    for (const id of [queued, ...running]) finals.push(await waitFor(id, ["COMPLETED"]));
    let again;
    try {
      await fal.queue.cancel(APP, { requestId: queued });
    } catch (error) {
      again = describeError(error);
    }
    let result;
    try {
      await fal.queue.result(APP, { requestId: running[0] });
    } catch (error) {
      result = describeError(error);
    }
    return {
      queuedBefore,
      finals: finals.map((s) => ({ status: s.status, error_type: s.error_type, error: s.error })),
      again,
      result,
    };
  },

  // The client uploads a Blob found in the input (storage.transformInput) and sends its URL instead.
  // The prompt carries it here, as the endpoint echoes its prompt: the output names the uploaded URL.
  async uploadInInput() {
    const blob = new Blob([await readFile(input.file)], { type: input.type });
    const { data } = await fal.subscribe(APP, { input: { ...input.arguments, prompt: blob }, pollInterval: 100 });
    return { data };
  },

  // Over 90 MiB the client switches to initiate-multipart and 10 MiB part PUTs.
  async storageUpload() {
    const blob = new Blob([await readFile(input.file)], { type: input.type });
    const url = await fal.storage.upload(blob, input.lifecycle ? { lifecycle: input.lifecycle } : undefined);
    return { url, calls };
  },

  async invalid() {
    const out = {};
    for (const [name, call] of [
      ["run", () => fal.run(APP, { input })],
      ["subscribe", () => fal.subscribe(APP, { input })],
    ]) {
      try {
        await call();
        out[name] = { name: "no error" };
      } catch (error) {
        out[name] = describeError(error);
      }
    }
    return out;
  },
};

try {
  const result = await scenarios[scenario]();
  process.stdout.write(JSON.stringify({ ok: true, result }) + "\n");
} catch (error) {
  process.stdout.write(JSON.stringify({ ok: false, error: describeError(error), message: String(error) }) + "\n");
}
