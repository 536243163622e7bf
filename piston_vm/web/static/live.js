// New voicemail without a reload: the account's event stream when the service has one
// (GET /v2/accounts/{A}/events, Server-Sent Events), polling while it is not connected.

export const EVENT_NAMES = ["voicemail_new", "voicemail_saved", "voicemail_deleted",
  "voicemail_full"];

export class LiveUpdates {
  // onChange({event, box, message}) is called for each event, and with {event: "poll"}.
  constructor({ url, pollMs, onChange, onModeChange }) {
    this.url = url;
    this.pollMs = pollMs;
    this.onChange = onChange;
    this.onModeChange = onModeChange ?? (() => {});
    this.source = null;
    this.timer = null;
    this.mode = "off";
  }

  start() {
    if (typeof EventSource !== "function") {
      this.poll();
      return;
    }
    this.source = new EventSource(this.url);
    this.source.addEventListener("open", () => {
      this.stopPolling();
      this.setMode("stream");
    });
    // A closed stream (the service has none, answers 404 or 401) or one that is reconnecting:
    // poll meanwhile. EventSource reconnects by itself unless it is closed.
    this.source.addEventListener("error", () => this.poll());
    for (const name of EVENT_NAMES) {
      this.source.addEventListener(name, (event) => this.deliver(name, event.data));
    }
  }

  deliver(name, raw) {
    let data = {};
    try {
      data = JSON.parse(raw) ?? {};
    } catch {
      data = {};
    }
    this.onChange({ event: name, box: data.voicemail_box ?? null,
      message: data.voicemail_id ?? null });
  }

  poll() {
    if (this.timer === null) {
      this.timer = window.setInterval(() => this.onChange({ event: "poll" }), this.pollMs);
    }
    this.setMode("polling");
  }

  stopPolling() {
    if (this.timer !== null) {
      window.clearInterval(this.timer);
      this.timer = null;
    }
  }

  setMode(mode) {
    if (mode !== this.mode) {
      this.mode = mode;
      this.onModeChange(mode);
    }
  }

  stop() {
    this.stopPolling();
    if (this.source) {
      this.source.close();
      this.source = null;
    }
    this.setMode("off");
  }
}
