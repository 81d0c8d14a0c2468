// The admin API as the console uses it: every call carries the admin token from sessionStorage, and
// every failure becomes an ApiProblem with the API's own error fields.

const TOKEN_KEY = "ollamaflow.adminToken";
const BASE = "/v1.0";

export function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function storeToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer: {"Error", "Message", "StatusCode", "Description"}, or what the console could tell. */
export class ApiProblem extends Error {
  constructor(status, body) {
    const description = body.Description || body.Message || `HTTP ${status}`;
    super(description);
    this.status = status;
    this.error = body.Error || (status ? `HTTP ${status}` : "NetworkError");
    this.apiMessage = body.Message || "";
    this.description = description;
  }

  /** A view only the leading control plane answers, asked of another replica. */
  get notLeader() {
    return this.status === 503 && /leading control plane only/.test(this.description);
  }
}

let onUnauthorized = () => {};

/** What to do when the API refuses the token (sign out, say why). */
export function whenUnauthorized(handler) {
  onUnauthorized = handler;
}

function headers(token, withBody) {
  const result = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  if (withBody) result["Content-Type"] = "application/json";
  return result;
}

async function problemOf(resp) {
  let body = {};
  try {
    body = await resp.json();
  } catch {
    body = {};
  }
  return new ApiProblem(resp.status, typeof body === "object" && body ? body : {});
}

/** Call the admin API; the parsed JSON answer (null for 204), or throw an ApiProblem. */
export async function call(method, path, body, { token = storedToken(), signal } = {}) {
  let resp;
  try {
    resp = await fetch(BASE + path, {
      method,
      headers: headers(token, body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      cache: "no-store",
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiProblem(0, { Description: `the control plane did not answer (${err.message})` });
  }
  if (!resp.ok) {
    const problem = await problemOf(resp);
    if (resp.status === 401) onUnauthorized(problem);
    throw problem;
  }
  const text = await resp.text();
  return text ? withHeaders(JSON.parse(text), resp.headers) : null;
}

function withHeaders(result, respHeaders) {
  // The publish error rides on a header of /dataplanes; keep it reachable without changing the body.
  if (result && typeof result === "object") {
    Object.defineProperty(result, "responseHeaders", { value: respHeaders, enumerable: false });
  }
  return result;
}

export const get = (path, options) => call("GET", path, undefined, options);
export const put = (path, body) => call("PUT", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const post = (path, body) => call("POST", path, body);
export const del = (path) => call("DELETE", path);

export const item = (collection, id) => `/${collection}/${encodeURIComponent(id)}`;

/**
 * Follow /v1.0/pulls/stream (NDJSON) until ``signal`` aborts: ``onPull`` gets each pull as it changes.
 * EventSource cannot send the Authorization header, so this reads the body of a fetch() as a stream.
 * Resolves when the stream ends; rejects with an ApiProblem when it cannot start.
 */
export async function followPulls(onPull, signal) {
  let resp;
  try {
    resp = await fetch(`${BASE}/pulls/stream`, { headers: headers(storedToken(), false), signal, cache: "no-store" });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiProblem(0, { Description: `the control plane did not answer (${err.message})` });
  }
  if (!resp.ok) {
    const problem = await problemOf(resp);
    if (resp.status === 401) onUnauthorized(problem);
    throw problem;
  }
  const reader = resp.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line) onPull(JSON.parse(line));
    }
    if (pending.length > 1 << 20) throw new ApiProblem(0, { Description: "a pull line over 1 MiB: stream dropped" });
  }
}
