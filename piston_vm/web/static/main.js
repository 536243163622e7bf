// The voicemail inbox: sign in, boxes with their counts, a box's messages, play, download,
// change, move and delete them, and see new voicemail arrive. Plain ES modules, no build step.

import * as api from "./api.js";
import { SessionExpired } from "./api.js";
import * as fmt from "./format.js";
import { LiveUpdates } from "./live.js";
import { md5Hex } from "./md5.js";
import { clearSession, loadSession, saveSession } from "./session.js";

const $ = (id) => document.getElementById(id);

function intParameter(name, fallback, lowest, highest) {
  const value = Number.parseInt(new URLSearchParams(window.location.search).get(name) ?? "", 10);
  return Number.isFinite(value) ? Math.min(Math.max(value, lowest), highest) : fallback;
}

// ?poll_ms= and ?page_size= let a user (and the tests) choose; the bounds keep a typo from
// hammering the service or asking for a page it refuses (docs/api.md 8.1).
const POLL_MS = intParameter("poll_ms", 5000, 250, 3_600_000);
const PAGE_SIZE = intParameter("page_size", 25, 1, 200);
const BOX_PATH = /^\/inbox\/boxes\/([^/]+)\/?$/;
const EXPIRED = "Your session has expired. Sign in again to continue.";

const ui = {
  accountBar: $("account-bar"),
  accountLabel: $("account-label"),
  signOut: $("sign-out"),
  signIn: $("sign-in"),
  signInTitle: $("sign-in-title"),
  signInNotice: $("sign-in-notice"),
  signInProblem: $("sign-in-problem"),
  userForm: $("user-form"),
  accountName: $("account-name"),
  username: $("username"),
  password: $("password"),
  keyForm: $("key-form"),
  apiKey: $("api-key"),
  inbox: $("inbox"),
  boxList: $("box-list"),
  noBoxes: $("no-boxes"),
  boxTitle: $("box-title"),
  boxMeta: $("box-meta"),
  notice: $("notice"),
  problem: $("problem"),
  player: $("player"),
  playerWhat: $("player-what"),
  audio: $("audio"),
  playerDownload: $("player-download"),
  playerClose: $("player-close"),
  toolbar: $("toolbar"),
  selectAll: $("select-all"),
  selectionCount: $("selection-count"),
  bulkSaved: $("bulk-saved"),
  bulkNew: $("bulk-new"),
  moveTo: $("move-to"),
  bulkMove: $("bulk-move"),
  bulkZip: $("bulk-zip"),
  bulkDelete: $("bulk-delete"),
  list: $("message-list"),
  empty: $("empty"),
  more: $("more"),
};

const state = {
  session: null,
  boxes: [],
  boxId: null,
  box: null,
  timeZone: fmt.browserTimeZone(),
  messages: [],
  nextStartKey: null,
  selected: new Set(),
  playing: null,
  live: null,
  liveMode: "off",
  refreshing: null,
  refreshAgain: false,
  // Bumped on sign-out and on every box change: an answer that arrives later is dropped.
  generation: 0,
  busy: false,
  refreshProblem: "",
};

const boxRows = new Map();
const messageRows = new Map();

// -- small helpers -------------------------------------------------------------------------

function setText(element, text) {
  // Unchanged text is left alone: a live region would announce it again.
  if (element.textContent !== text) {
    element.textContent = text;
  }
}

function element(tag, attributes = {}, ...children) {
  const made = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "class") {
      made.className = value;
    } else {
      made.setAttribute(name, value);
    }
  }
  made.append(...children);
  return made;
}

function hiddenText(text) {
  return element("span", { class: "visually-hidden" }, text);
}

// Hiding what holds the focus would drop it on <body>: the box's heading takes it instead.
function hideKeepingFocus(part, hidden) {
  const hadFocus = hidden && part.contains(document.activeElement);
  part.hidden = hidden;
  if (hadFocus) {
    ui.boxTitle.focus();
  }
}

function announce(text) {
  setText(ui.notice, text);
}

function complain(text) {
  setText(ui.problem, text);
}

function capitalised(text) {
  return text.charAt(0).toUpperCase() + text.slice(1);
}

function findMessage(id) {
  return state.messages.find((message) => message.media_id === id) ?? null;
}

function currentBox() {
  return state.boxes.find((box) => box.id === state.boxId) ?? null;
}

function boxLabel(box) {
  return box.mailbox ? `${box.name} (${box.mailbox})` : box.name;
}

function describe(message) {
  const when = fmt.displayTime(fmt.dateOf(message.timestamp), state.timeZone);
  return `${fmt.callerOf(message).label}, ${when}`;
}

function boxFromLocation() {
  const match = BOX_PATH.exec(window.location.pathname);
  return match ? decodeURIComponent(match[1]) : null;
}

function setDisabled(control, disabled) {
  // aria-disabled, not disabled: a button that goes dim under the keyboard's focus keeps it.
  control.setAttribute("aria-disabled", String(disabled));
}

function isDisabled(control) {
  return control.getAttribute("aria-disabled") === "true";
}

function handleFailure(error) {
  if (error instanceof SessionExpired) {
    signOut({ problem: EXPIRED });
    return;
  }
  complain(error?.message ?? String(error));
}

async function guarded(work) {
  if (state.busy) {
    return;
  }
  state.busy = true;
  ui.inbox.setAttribute("aria-busy", "true");
  try {
    await work();
  } catch (error) {
    handleFailure(error);
  } finally {
    state.busy = false;
    ui.inbox.removeAttribute("aria-busy");
  }
}

// -- signing in and out --------------------------------------------------------------------

function showSignIn({ notice = "", problem = "" }) {
  ui.inbox.hidden = true;
  ui.accountBar.hidden = true;
  ui.signIn.hidden = false;
  document.title = "Sign in – Voicemail";
  setText(ui.signInNotice, notice);
  setText(ui.signInProblem, problem);
  const first = [ui.accountName, ui.username, ui.password].find((input) => !input.value)
    ?? ui.password;
  first.focus();
}

function signInFailure(error) {
  if (error.status === 401) {
    return "Those details did not sign you in. Check them and try again.";
  }
  if (error.status === 429) {
    const wait = error.retryAfterS ?? 60;
    return `Too many failed sign-ins. Try again in ${fmt.plural(wait, "second")}.`;
  }
  return error.message;
}

function missingFields(inputs) {
  let first = null;
  for (const input of inputs) {
    const empty = !input.value.trim();
    input.setAttribute("aria-invalid", String(empty));
    first = first ?? (empty ? input : null);
  }
  return first;
}

async function signInWith(form, inputs, missing, request) {
  if (state.busy) {
    return;
  }
  setText(ui.signInNotice, "");
  const empty = missingFields(inputs);
  if (empty) {
    setText(ui.signInProblem, missing);
    empty.focus();
    return;
  }
  state.busy = true;
  form.setAttribute("aria-busy", "true");
  try {
    const answer = await request();
    setText(ui.signInProblem, "");
    startSession({
      token: answer.auth_token,
      accountId: answer.data.account_id,
      accountName: answer.data.account_name ?? "",
      ownerId: answer.data.owner_id ?? null,
    });
  } catch (error) {
    setText(ui.signInProblem, signInFailure(error));
  } finally {
    state.busy = false;
    form.removeAttribute("aria-busy");
  }
}

function startSession(session) {
  saveSession(session);
  state.session = session;
  ui.password.value = "";
  ui.apiKey.value = "";
  enterInbox({ focus: true });
}

function signOut({ notice = "", problem = "" } = {}) {
  state.generation += 1;
  state.live?.stop();
  state.live = null;
  closePlayer({ restoreFocus: false });
  clearSession();
  state.session = null;
  state.boxes = [];
  state.boxId = null;
  state.box = null;
  state.messages = [];
  state.nextStartKey = null;
  state.selected.clear();
  boxRows.clear();
  messageRows.clear();
  ui.boxList.replaceChildren();
  ui.list.replaceChildren();
  setText(ui.notice, "");
  setText(ui.problem, "");
  ui.password.value = "";
  ui.apiKey.value = "";
  showSignIn({ notice, problem });
}

// -- the inbox -----------------------------------------------------------------------------

async function enterInbox({ focus }) {
  const generation = ++state.generation;
  ui.signIn.hidden = true;
  ui.inbox.hidden = false;
  ui.accountBar.hidden = false;
  setText(ui.accountLabel, state.session.accountName || state.session.accountId);
  setText(ui.boxTitle, "Voicemail");
  if (focus) {
    ui.boxTitle.focus();
  }
  startLive();
  try {
    state.boxes = await api.listBoxes(state.session);
    if (generation !== state.generation) {
      return;
    }
    renderBoxes();
    const wanted = boxFromLocation();
    const chosen = state.boxes.find((box) => box.id === wanted) ?? state.boxes[0];
    if (chosen) {
      await openBox(chosen.id, { push: false, focus: false });
    }
  } catch (error) {
    handleFailure(error);
  }
}

function startLive() {
  state.live?.stop();
  state.live = new LiveUpdates({
    url: api.eventsUrl(state.session),
    pollMs: POLL_MS,
    onChange: onLiveChange,
    onModeChange: (mode) => {
      state.liveMode = mode;
      document.documentElement.dataset.live = mode;
      renderBoxMeta();
    },
  });
  state.live.start();
}

function onLiveChange({ event, box }) {
  if (event === "poll" && document.hidden) {
    // Nobody is looking: the next look (visibilitychange) refreshes at once instead.
    return;
  }
  if (event === "voicemail_full") {
    const full = state.boxes.find((candidate) => candidate.id === box);
    complain(`The box ${full ? boxLabel(full) : box} is full: it takes no more messages.`);
  }
  refreshInBackground();
}

// A refresh nobody clicked for: its failure says so, and the next success takes it back.
function refreshInBackground() {
  refresh().then(() => {
    if (state.refreshProblem && ui.problem.textContent === state.refreshProblem) {
      complain("");
    }
    state.refreshProblem = "";
  }, (error) => {
    if (error instanceof SessionExpired) {
      handleFailure(error);
      return;
    }
    state.refreshProblem = `Could not check for new voicemail. ${error?.message ?? ""}`.trim();
    complain(state.refreshProblem);
  });
}

async function openBox(boxId, { push, focus }) {
  const generation = ++state.generation;
  state.boxId = boxId;
  state.box = null;
  state.messages = [];
  state.nextStartKey = null;
  state.selected.clear();
  messageRows.clear();
  ui.list.replaceChildren();
  setText(ui.notice, "");
  setText(ui.problem, "");
  if (push) {
    const path = `/inbox/boxes/${encodeURIComponent(boxId)}${window.location.search}`;
    window.history.pushState({ box: boxId }, "", path);
  }
  renderBoxes();
  const listed = currentBox();
  setText(ui.boxTitle, listed ? boxLabel(listed) : "Voicemail");
  ui.list.setAttribute("aria-busy", "true");
  if (focus) {
    ui.boxTitle.focus();
  }
  try {
    const [box, page] = await Promise.all([
      api.getBox(state.session, boxId),
      api.listMessages(state.session, boxId, PAGE_SIZE),
    ]);
    if (generation !== state.generation) {
      return;
    }
    state.box = box;
    state.timeZone = fmt.usableTimeZone(box.timezone) ?? fmt.browserTimeZone();
    state.messages = page.messages;
    state.nextStartKey = page.nextStartKey;
    renderBox();
  } catch (error) {
    if (generation === state.generation) {
      handleFailure(error);
    }
  } finally {
    if (generation === state.generation) {
      ui.list.removeAttribute("aria-busy");
    }
  }
}

// Reload the counts and the open box's first pages; calls made meanwhile fold into one more.
function refresh() {
  if (!state.session) {
    return Promise.resolve();
  }
  if (state.refreshing) {
    state.refreshAgain = true;
    return state.refreshing;
  }
  state.refreshing = (async () => {
    do {
      state.refreshAgain = false;
      await reload();
    } while (state.refreshAgain && state.session);
  })().finally(() => {
    state.refreshing = null;
  });
  return state.refreshing;
}

async function reload() {
  const generation = state.generation;
  const { boxId, session } = state;
  // As many rows as are shown now, so that "Show older messages" is not undone.
  const rows = Math.max(PAGE_SIZE, state.messages.length);
  const [boxes, page] = await Promise.all([
    api.listBoxes(session),
    boxId ? api.listMessages(session, boxId, rows) : Promise.resolve(null),
  ]);
  if (generation !== state.generation) {
    return;
  }
  state.boxes = boxes;
  if (boxId && !boxes.some((box) => box.id === boxId)) {
    // The open box was deleted elsewhere.
    renderBoxes();
    if (boxes[0]) {
      await openBox(boxes[0].id, { push: true, focus: false });
    }
    return;
  }
  const before = new Set(state.messages.map((message) => message.media_id));
  if (page) {
    state.messages = page.messages;
    state.nextStartKey = page.nextStartKey;
    const arrived = page.messages.filter((message) => !before.has(message.media_id)
      && message.folder === "new");
    if (before.size && arrived.length === 1) {
      announce(`New voicemail from ${fmt.callerOf(arrived[0]).label}.`);
    } else if (before.size && arrived.length > 1) {
      announce(`${fmt.plural(arrived.length, "new voicemail", "new voicemails")}.`);
    }
  }
  renderBox();
}

// -- rendering -----------------------------------------------------------------------------

function renderBox() {
  renderBoxes();
  renderBoxMeta();
  renderMessages();
  renderMoveTargets();
  renderSelection();
}

function renderBoxes() {
  const seen = new Set();
  let newTotal = 0;
  let previous = null;
  for (const box of state.boxes) {
    seen.add(box.id);
    let row = boxRows.get(box.id);
    if (!row) {
      const button = element("button", { type: "button", class: "box-button" });
      button.dataset.box = box.id;
      row = element("li", {}, button);
      row.parts = {
        button,
        name: element("span", { class: "box-name" }),
        mailbox: element("span", { class: "box-mailbox" }),
        fresh: element("span", { class: "count-new" }),
        saved: element("span", { class: "count-saved" }),
      };
      const counts = element("span", { class: "counts" }, row.parts.fresh, ", ",
        row.parts.saved);
      button.append(row.parts.name, " ", row.parts.mailbox, " ", counts);
      boxRows.set(box.id, row);
    }
    const fresh = box.folders?.new ?? 0;
    const saved = box.folders?.saved ?? 0;
    newTotal += fresh;
    setText(row.parts.name, box.name);
    setText(row.parts.mailbox, box.mailbox ?? "");
    setText(row.parts.fresh, `${fresh} new`);
    setText(row.parts.saved, `${saved} saved`);
    row.classList.toggle("has-new", fresh > 0);
    if (box.id === state.boxId) {
      row.parts.button.setAttribute("aria-current", "true");
    } else {
      row.parts.button.removeAttribute("aria-current");
    }
    const expected = previous ? previous.nextElementSibling : ui.boxList.firstElementChild;
    if (row !== expected) {
      ui.boxList.insertBefore(row, expected);
    }
    previous = row;
  }
  for (const [id, row] of boxRows) {
    if (!seen.has(id)) {
      row.remove();
      boxRows.delete(id);
    }
  }
  ui.noBoxes.hidden = state.boxes.length > 0;
  document.title = newTotal ? `(${newTotal}) Voicemail` : "Voicemail";
  const listed = currentBox();
  if (listed) {
    setText(ui.boxTitle, boxLabel(listed));
  }
}

function renderBoxMeta() {
  if (!state.box) {
    setText(ui.boxMeta, "");
    return;
  }
  const zone = fmt.usableTimeZone(state.box.timezone)
    ? `Times in the box's time zone, ${state.timeZone}.`
    : `Times in your time zone, ${state.timeZone}.`;
  const live = state.liveMode === "stream" ? "New voicemail shows up as it arrives."
    : state.liveMode === "polling"
      ? `Checks for new voicemail every ${fmt.plural(Math.round(POLL_MS / 100) / 10, "second")}.`
      : "";
  setText(ui.boxMeta, `${zone} ${live}`.trim());
}

function buildMessageRow(id) {
  const parts = {
    check: element("input", { type: "checkbox", class: "select" }),
    badge: element("span", { class: "badge" }, "New"),
    name: element("span", { class: "caller-name" }),
    number: element("span", { class: "caller-number" }),
    time: element("time", { class: "when" }),
    duration: element("span", { class: "duration-value" }),
    folder: element("span", { class: "folder-value" }),
    play: element("button", { type: "button", class: "play" }, "Play"),
    download: element("a", { class: "button download", download: "" }, "Download"),
    toggle: element("button", { type: "button", class: "toggle" }),
    remove: element("button", { type: "button", class: "delete danger" }, "Delete"),
  };
  parts.play.dataset.action = "play";
  parts.toggle.dataset.action = "toggle";
  parts.remove.dataset.action = "delete";
  const row = element("li", { class: "message" },
    element("div", { class: "pick" }, parts.check),
    element("div", { class: "who" }, parts.badge, parts.name, parts.number),
    element("div", { class: "when-cell" }, parts.time),
    element("div", { class: "duration" }, hiddenText("Length: "), parts.duration),
    element("div", { class: "folder" }, hiddenText("Folder: "), parts.folder),
    element("div", { class: "actions" }, parts.play, parts.download, parts.toggle,
      parts.remove));
  row.dataset.id = id;
  row.parts = parts;
  return row;
}

function updateMessageRow(row, message) {
  const { parts } = row;
  const caller = fmt.callerOf(message);
  const date = fmt.dateOf(message.timestamp);
  const when = fmt.displayTime(date, state.timeZone);
  const about = `message from ${caller.label}, ${when}`;
  const isNew = message.folder === "new";
  const duration = fmt.displayDuration(message.length);
  row.classList.toggle("is-new", isNew);
  row.classList.toggle("is-playing", state.playing === message.media_id);
  row.dataset.folder = message.folder;
  parts.badge.hidden = !isNew;
  setText(parts.name, caller.name);
  setText(parts.number, caller.number);
  parts.time.dateTime = fmt.isoInZone(date, state.timeZone);
  setText(parts.time, when);
  setText(parts.duration, duration.text);
  parts.duration.title = duration.spoken;
  setText(parts.folder, message.folder);
  parts.check.checked = state.selected.has(message.media_id);
  parts.check.setAttribute("aria-label", `Select ${about}`);
  parts.play.setAttribute("aria-label", `Play ${about}`);
  parts.download.href = api.audioUrl(state.session, state.boxId, message.media_id);
  parts.download.setAttribute("aria-label", `Download ${about}`);
  const toggle = isNew ? "Mark saved" : "Mark new";
  setText(parts.toggle, toggle);
  parts.toggle.setAttribute("aria-label", `${toggle}: ${about}`);
  parts.remove.setAttribute("aria-label", `Delete ${about}`);
}

function renderMessages() {
  const seen = new Set();
  const focused = document.activeElement;
  let lostFocusAt = -1;
  let previous = null;
  for (const message of state.messages) {
    const id = message.media_id;
    seen.add(id);
    let row = messageRows.get(id);
    if (!row) {
      row = buildMessageRow(id);
      messageRows.set(id, row);
    }
    updateMessageRow(row, message);
    const expected = previous ? previous.nextElementSibling : ui.list.firstElementChild;
    if (row !== expected) {
      ui.list.insertBefore(row, expected);
    }
    previous = row;
  }
  const rows = Array.from(ui.list.children);
  rows.forEach((row, index) => {
    if (!seen.has(row.dataset.id)) {
      if (row.contains(focused)) {
        lostFocusAt = index;
      }
      row.remove();
      messageRows.delete(row.dataset.id);
    }
  });
  if (lostFocusAt >= 0) {
    // The focused message went away (deleted, moved): its neighbour takes the focus.
    const left = Array.from(ui.list.children);
    const next = left[Math.min(lostFocusAt, left.length - 1)];
    (next ? next.parts.check : ui.boxTitle).focus();
  }
  ui.empty.hidden = state.messages.length > 0 || !state.box;
  hideKeepingFocus(ui.more, !state.nextStartKey);
  hideKeepingFocus(ui.toolbar, state.messages.length === 0);
  for (const id of Array.from(state.selected)) {
    if (!seen.has(id)) {
      state.selected.delete(id);
    }
  }
}

function renderMoveTargets() {
  const others = state.boxes.filter((box) => box.id !== state.boxId);
  const chosen = ui.moveTo.value;
  ui.moveTo.replaceChildren(...others.map((box) => {
    const option = element("option", { value: box.id }, boxLabel(box));
    option.selected = box.id === chosen;
    return option;
  }));
  ui.moveTo.disabled = others.length === 0;
}

function renderSelection() {
  const count = state.selected.size;
  const total = state.messages.length;
  setText(ui.selectionCount, count ? `${count} selected` : "None selected");
  ui.selectAll.checked = count > 0 && count === total;
  ui.selectAll.indeterminate = count > 0 && count < total;
  for (const control of [ui.bulkSaved, ui.bulkNew, ui.bulkZip, ui.bulkDelete]) {
    setDisabled(control, count === 0);
  }
  setDisabled(ui.bulkMove, count === 0 || ui.moveTo.options.length === 0);
}

// -- playing -------------------------------------------------------------------------------

function play(id) {
  const message = findMessage(id);
  if (!message) {
    return;
  }
  const url = api.audioUrl(state.session, state.boxId, id);
  state.playing = id;
  setText(ui.playerWhat, describe(message));
  ui.playerDownload.href = url;
  ui.player.hidden = false;
  ui.audio.src = url;
  ui.audio.play().catch(() => {
    // Refused autoplay or a pause before it started: the controls are there.
  });
  renderMessages();
}

function closePlayer({ restoreFocus }) {
  const was = state.playing;
  state.playing = null;
  ui.audio.pause();
  ui.audio.removeAttribute("src");
  ui.audio.load();
  ui.player.hidden = true;
  if (restoreFocus) {
    const row = was ? messageRows.get(was) : null;
    (row ? row.parts.play : ui.boxTitle).focus();
  }
  if (state.session) {
    renderMessages();
  }
}

// -- changing messages ---------------------------------------------------------------------

function setFolder(id, folder) {
  const message = findMessage(id);
  return guarded(async () => {
    await api.changeFolder(state.session, state.boxId, id, folder);
    complain("");
    announce(`Marked the message from ${fmt.callerOf(message).label} ${folder}.`);
    await refresh();
  });
}

function deleteOne(id) {
  const message = findMessage(id);
  if (!message || !window.confirm(`Delete the message from ${describe(message)}?`)) {
    return Promise.resolve();
  }
  return guarded(async () => {
    await api.deleteMessage(state.session, state.boxId, id);
    if (state.playing === id) {
      closePlayer({ restoreFocus: false });
    }
    complain("");
    announce(`Deleted the message from ${fmt.callerOf(message).label}.`);
    await refresh();
  });
}

function selectedIds() {
  // In list order, which is the order the service reports and zips them in.
  return state.messages.map((message) => message.media_id).filter((id) => state.selected.has(id));
}

function reportBulk(result, done, failedVerb, labels) {
  const succeeded = result?.succeeded ?? [];
  const failed = (result?.failed ?? []).map((entry) => Object.entries(entry)[0]);
  announce(succeeded.length ? `${capitalised(fmt.plural(succeeded.length, "message"))} ${done}.`
    : "");
  if (failed.length) {
    const which = failed.map(([id, reason]) => `${labels.get(id) ?? id} (${fmt.reasonText(reason)})`);
    complain(`${capitalised(fmt.plural(failed.length, "message"))} could not be ${failedVerb}: `
      + `${which.join("; ")}.`);
  } else {
    complain("");
  }
}

function bulk(action) {
  const ids = selectedIds();
  if (ids.length === 0) {
    return Promise.resolve();
  }
  const labels = new Map(ids.map((id) => [id, describe(findMessage(id))]));
  if (action === "delete"
      && !window.confirm(`Delete ${fmt.plural(ids.length, "selected message")}?`)) {
    return Promise.resolve();
  }
  return guarded(async () => {
    const { session, boxId } = state;
    if (action === "delete") {
      reportBulk(await api.bulkDelete(session, boxId, ids), "deleted", "deleted", labels);
      if (state.playing && ids.includes(state.playing)) {
        closePlayer({ restoreFocus: false });
      }
    } else if (action === "move") {
      const destination = state.boxes.find((box) => box.id === ui.moveTo.value);
      if (!destination) {
        return;
      }
      const result = await api.bulkMove(session, boxId, ids, destination.id);
      reportBulk(result, `moved to ${boxLabel(destination)}`, "moved", labels);
    } else {
      reportBulk(await api.bulkFolder(session, boxId, ids, action), `marked ${action}`,
        `marked ${action}`, labels);
    }
    state.selected.clear();
    await refresh();
  });
}

function downloadZip() {
  const ids = selectedIds();
  if (ids.length === 0) {
    return Promise.resolve();
  }
  return guarded(async () => {
    const blob = await api.zipOf(state.session, state.boxId, ids);
    const url = URL.createObjectURL(blob);
    const link = element("a", { href: url, download: zipName(), hidden: "" });
    document.body.append(link);
    link.click();
    link.remove();
    // Long enough for the browser to have taken the file.
    window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
    complain("");
    announce(`Downloading ${fmt.plural(ids.length, "message")} as a ZIP file.`);
  });
}

function zipName() {
  const box = currentBox();
  const label = (box?.mailbox || box?.name || "box").replace(/[^A-Za-z0-9_-]+/g, "-");
  return `voicemail-${label}.zip`;
}

function loadMore() {
  if (!state.nextStartKey) {
    return Promise.resolve();
  }
  const generation = state.generation;
  return guarded(async () => {
    const page = await api.listMessages(state.session, state.boxId, PAGE_SIZE,
      state.nextStartKey);
    if (generation !== state.generation) {
      return;
    }
    const known = new Set(state.messages.map((message) => message.media_id));
    const fresh = page.messages.filter((message) => !known.has(message.media_id));
    state.messages.push(...fresh);
    state.nextStartKey = page.nextStartKey;
    renderBox();
    if (!state.nextStartKey && fresh[0]) {
      // The button just went away under the focus: the first of the older messages takes it.
      messageRows.get(fresh[0].media_id)?.parts.check.focus();
    }
  });
}

// -- wiring --------------------------------------------------------------------------------

function wire() {
  ui.userForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const account = ui.accountName.value.trim();
    const credentials = md5Hex(`${ui.username.value.trim()}:${ui.password.value}`);
    signInWith(ui.userForm, [ui.accountName, ui.username, ui.password],
      "Enter the account name, your username and your password.",
      () => api.userAuth(account, credentials));
  });
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.apiKey.value.trim();
    signInWith(ui.keyForm, [ui.apiKey], "Enter the API key.", () => api.apiAuth(key));
  });
  ui.signOut.addEventListener("click", () => signOut({ notice: "You are signed out." }));

  ui.boxList.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-box]");
    if (button && button.dataset.box !== state.boxId) {
      openBox(button.dataset.box, { push: true, focus: true });
    }
  });
  window.addEventListener("popstate", () => {
    if (state.session) {
      const wanted = boxFromLocation();
      const chosen = state.boxes.find((box) => box.id === wanted) ?? state.boxes[0];
      if (chosen && chosen.id !== state.boxId) {
        openBox(chosen.id, { push: false, focus: true });
      }
    }
  });

  ui.list.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    const row = event.target.closest("li.message");
    if (!button || !row) {
      return;
    }
    const id = row.dataset.id;
    if (button.dataset.action === "play") {
      play(id);
    } else if (button.dataset.action === "toggle") {
      setFolder(id, row.dataset.folder === "new" ? "saved" : "new");
    } else if (button.dataset.action === "delete") {
      deleteOne(id);
    }
  });
  ui.list.addEventListener("change", (event) => {
    const row = event.target.closest("li.message");
    if (row && event.target.matches("input.select")) {
      if (event.target.checked) {
        state.selected.add(row.dataset.id);
      } else {
        state.selected.delete(row.dataset.id);
      }
      renderSelection();
    }
  });
  ui.selectAll.addEventListener("change", () => {
    state.selected = new Set(ui.selectAll.checked
      ? state.messages.map((message) => message.media_id) : []);
    renderMessages();
    renderSelection();
  });

  const actions = [
    [ui.bulkSaved, () => bulk("saved")],
    [ui.bulkNew, () => bulk("new")],
    [ui.bulkMove, () => bulk("move")],
    [ui.bulkDelete, () => bulk("delete")],
    [ui.bulkZip, downloadZip],
  ];
  for (const [control, action] of actions) {
    control.addEventListener("click", () => {
      if (!isDisabled(control)) {
        action();
      }
    });
  }
  ui.moveTo.addEventListener("change", renderSelection);
  ui.more.addEventListener("click", loadMore);
  ui.playerClose.addEventListener("click", () => closePlayer({ restoreFocus: true }));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.session) {
      refreshInBackground();
    }
  });
  ui.audio.addEventListener("error", () => {
    if (state.playing) {
      complain("This message's audio could not be played. It may have been deleted or moved.");
    }
  });
}

function boot() {
  wire();
  state.session = loadSession();
  if (state.session) {
    enterInbox({ focus: false });
  } else {
    showSignIn({});
  }
}

boot();
