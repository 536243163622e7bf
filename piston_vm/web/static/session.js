// The signed-in session, in sessionStorage only: it ends with the tab, and is never shared
// with other tabs or written to disk the way localStorage is.

const KEY = "piston_vm.inbox.session";
const ACCOUNT_ID = /^[0-9a-f]{32}$/;

export function loadSession() {
  try {
    const stored = JSON.parse(sessionStorage.getItem(KEY) ?? "null");
    if (stored && typeof stored.token === "string" && stored.token
        && ACCOUNT_ID.test(stored.accountId)) {
      return stored;
    }
  } catch {
    // A value that is not ours: as if there were none.
  }
  return null;
}

export function saveSession(session) {
  sessionStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}
