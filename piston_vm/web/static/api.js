// The public API of piston_vm (docs/api.md), and nothing else: this page is also an example
// of how a browser client uses it.

export class ApiError extends Error {
  constructor(status, body, retryAfterS = null) {
    super(describe(status, body));
    this.name = "ApiError";
    this.status = status;
    this.body = body;
    this.retryAfterS = retryAfterS;
  }
}

// A 401 on a request that carried a token: it expired, or the service no longer accepts it.
export class SessionExpired extends ApiError {
  constructor(status, body) {
    super(status, body);
    this.name = "SessionExpired";
  }
}

function describe(status, body) {
  if (status === 0) {
    return "The voicemail service did not answer. Check your connection and try again.";
  }
  const message = body?.data?.message ?? body?.message ?? "";
  return message ? `The service answered ${status}: ${message}.` : `The service answered ${status}.`;
}

const segment = encodeURIComponent;

function boxPath(accountId, boxId) {
  return `/v2/accounts/${segment(accountId)}/vmboxes/${segment(boxId)}`;
}

async function call(method, path, { token, data, query, accept } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== undefined && value !== null) {
      url.searchParams.set(key, String(value));
    }
  }
  const headers = { Accept: accept ?? "application/json" };
  if (token) {
    headers["X-Auth-Token"] = token;
  }
  let body;
  if (data !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify({ data });
  }
  let response;
  try {
    response = await fetch(url, {
      method, headers, body, cache: "no-store", credentials: "omit", redirect: "error",
    });
  } catch {
    throw new ApiError(0, null);
  }
  if (response.ok && accept && accept !== "application/json") {
    return response;
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    if (response.status === 401 && token) {
      throw new SessionExpired(response.status, json);
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    throw new ApiError(response.status, json, Number.isFinite(retryAfter) ? retryAfter : null);
  }
  return json;
}

// docs/api.md 6.3: credentials = md5("user:password"). The account may be named by its realm
// or its name; the service tries the realm first, then the name, so both are sent.
export function userAuth(account, credentials) {
  return call("PUT", "/v2/user_auth", {
    data: { credentials, method: "md5", account_name: account, account_realm: account },
  });
}

export function apiAuth(apiKey) {
  return call("PUT", "/v2/api_auth", { data: { api_key: apiKey } });
}

// Every box with its counts, following the cursors (docs/api.md 8.2, 9.1).
export async function listBoxes(session) {
  const boxes = [];
  let startKey;
  do {
    const page = await call("GET", `/v2/accounts/${segment(session.accountId)}/vmboxes`, {
      token: session.token, query: { start_key: startKey },
    });
    boxes.push(...page.data);
    startKey = page.next_start_key;
  } while (startKey);
  return boxes;
}

export async function getBox(session, boxId) {
  return (await call("GET", boxPath(session.accountId, boxId), { token: session.token })).data;
}

// One page, newest first; `next_start_key` names the first row of the next page (8.2).
export async function listMessages(session, boxId, pageSize, startKey) {
  const page = await call("GET", `${boxPath(session.accountId, boxId)}/messages`, {
    token: session.token, query: { page_size: pageSize, start_key: startKey },
  });
  return { messages: page.data, nextStartKey: page.next_start_key ?? null };
}

export async function changeFolder(session, boxId, messageId, folder) {
  const path = `${boxPath(session.accountId, boxId)}/messages/${segment(messageId)}`;
  return (await call("POST", path, { token: session.token, data: { folder } })).data;
}

export async function deleteMessage(session, boxId, messageId) {
  const path = `${boxPath(session.accountId, boxId)}/messages/${segment(messageId)}`;
  return (await call("DELETE", path, { token: session.token })).data;
}

// The bulk endpoints answer {succeeded: [ids], failed: [{id: reason}]} (docs/api.md 10).
export async function bulkFolder(session, boxId, messageIds, folder) {
  return (await call("POST", `${boxPath(session.accountId, boxId)}/messages`, {
    token: session.token, data: { messages: messageIds, folder },
  })).data;
}

export async function bulkMove(session, boxId, messageIds, destinationBoxId) {
  return (await call("POST", `${boxPath(session.accountId, boxId)}/messages`, {
    token: session.token, data: { messages: messageIds, source_id: destinationBoxId },
  })).data;
}

export async function bulkDelete(session, boxId, messageIds) {
  return (await call("DELETE", `${boxPath(session.accountId, boxId)}/messages`, {
    token: session.token, data: { messages: messageIds },
  })).data;
}

export async function zipOf(session, boxId, messageIds) {
  const response = await call("POST", `${boxPath(session.accountId, boxId)}/messages/raw`, {
    token: session.token, data: { messages: messageIds }, accept: "application/zip",
  });
  return response.blob();
}

// <audio> and download links cannot send headers: the token rides in the query (6.1).
export function audioUrl(session, boxId, messageId) {
  const path = `${boxPath(session.accountId, boxId)}/messages/${segment(messageId)}/raw`;
  return `${path}?auth_token=${segment(session.token)}`;
}

export function eventsUrl(session) {
  return `/v2/accounts/${segment(session.accountId)}/events?auth_token=${segment(session.token)}`;
}
