// How a message reads on the page: who called, when (in the box's time zone), how long.

// Message timestamps are Gregorian seconds: seconds since 0001-01-01 UTC (docs/storage.md 2.1).
const UNIX_EPOCH_GREGORIAN_S = 62167219200;

export function browserTimeZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
}

// The zone a box names, when it names one this browser knows; "inherit" names none
// (the service then looks at the owner and the account, which this page cannot read).
export function usableTimeZone(name) {
  if (typeof name !== "string" || !name || name === "inherit") {
    return null;
  }
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: name });
    return name;
  } catch {
    return null;
  }
}

export function dateOf(gregorianS) {
  return new Date((gregorianS - UNIX_EPOCH_GREGORIAN_S) * 1000);
}

// The wall-clock time in `timeZone` with its offset, for <time datetime="…">.
export function isoInZone(date, timeZone) {
  const parts = {};
  const format = new Intl.DateTimeFormat("en-US", {
    timeZone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit",
    minute: "2-digit", second: "2-digit", hourCycle: "h23", timeZoneName: "longOffset",
  });
  for (const part of format.formatToParts(date)) {
    parts[part.type] = part.value;
  }
  const offset = parts.timeZoneName === "GMT" ? "+00:00" : parts.timeZoneName.replace("GMT", "");
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}:`
    + `${parts.second}${offset}`;
}

export function displayTime(date, timeZone) {
  return new Intl.DateTimeFormat(undefined, {
    timeZone, dateStyle: "medium", timeStyle: "short",
  }).format(date);
}

// `length` is milliseconds; the API's default for "not given" is 1 (docs/api.md 9.9).
export function displayDuration(lengthMs) {
  if (typeof lengthMs !== "number" || lengthMs <= 1) {
    return { text: "–", spoken: "length unknown" };
  }
  const totalS = Math.round(lengthMs / 1000);
  const minutes = Math.floor(totalS / 60);
  const seconds = totalS % 60;
  const spoken = minutes
    ? `${minutes} minute${minutes === 1 ? "" : "s"} ${seconds} second${seconds === 1 ? "" : "s"}`
    : `${seconds} second${seconds === 1 ? "" : "s"}`;
  return { text: `${minutes}:${String(seconds).padStart(2, "0")}`, spoken };
}

export function callerOf(message) {
  const name = (message.caller_id_name ?? "").trim();
  const number = (message.caller_id_number ?? "").trim();
  if (name && number && name !== number) {
    return { name, number, label: `${name} (${number})` };
  }
  const only = name || number || "Unknown caller";
  return { name: only, number: "", label: only };
}

export function plural(count, one, many = `${one}s`) {
  return `${count} ${count === 1 ? one : many}`;
}

// Bulk failure reasons are the platform's words (docs/api.md 10): not_found, conflict, …
export function reasonText(reason) {
  return String(reason).replaceAll("_", " ");
}
