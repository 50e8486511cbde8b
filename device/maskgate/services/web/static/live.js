"use strict";
// One door, live: its status arrives as JSON text and its preview as JPEG binary messages on one
// WebSocket (/api/v1/live). Every change of what is shown is logged in window.maskgateLog.
window.maskgateLog = [];

// audience "public" (the kiosk, read by people at the door) is never told about connections: a lost
// connection shows "Please wait", and only after LOST_SECONDS that the door is out of service.
class LiveView {
  constructor(root, { door = null, preview = true, audience = "staff" } = {}) {
    this.root = root;
    this.door = door;
    this.preview = preview;
    this.audience = audience;
    this.frames = 0;
    this.deadline = null;
    this.shown = null;
    this.state = null;
    this.lostAt = null;
    this.addPlaceholder();
    this.connect();
    setInterval(() => this.tick(), 100);
  }

  addPlaceholder() {
    const img = this.part("preview");
    if (!img) return;
    img.hidden = true; // until its first frame: never a broken-image icon
    const placeholder = document.createElement("div");
    placeholder.className = "placeholder";
    placeholder.dataset.role = "placeholder";
    placeholder.innerHTML = '<svg class="icon" aria-hidden="true"><use href="/static/icons.svg#camera"/></svg>' +
      "<span>No camera picture yet</span>";
    img.before(placeholder);
  }

  part(role) {
    return this.root.querySelector(`[data-role="${role}"]`);
  }

  connect() {
    const query = new URLSearchParams({ preview: this.preview ? "1" : "0" });
    if (this.door !== null) query.set("door", this.door);
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/api/v1/live?${query}`);
    ws.binaryType = "blob";
    ws.onmessage = (event) =>
      typeof event.data === "string" ? this.render(JSON.parse(event.data)) : this.showFrame(event.data);
    ws.onopen = () => (this.lostAt = null);
    ws.onclose = () => {
      this.lostAt ??= performance.now();
      this.render(this.disconnected((performance.now() - this.lostAt) / 1000));
      setTimeout(() => this.connect(), 1000);
    };
  }

  disconnected(seconds) {
    if (this.audience !== "public") return LiveView.outOfService;
    if (this.state === "stopped" || seconds >= LiveView.LOST_SECONDS) return LiveView.outOfServicePublic;
    return LiveView.pleaseWait;
  }

  render(status) {
    const view = status.view;
    if (status.type === "status") this.state = status.state;
    this.root.dataset.tone = view.tone;
    this.root.dataset.state = status.state;
    this.part("icon").setAttribute("href", `/static/icons.svg#${view.icon}`);
    this.part("word").textContent = view.word;
    this.part("title").textContent = view.title;
    this.part("detail").textContent = view.detail;
    const open = view.tone === "go" && status.door === "unlocked" &&
      status.seconds_left !== null && status.seconds_left !== undefined;
    this.deadline = open ? performance.now() + status.seconds_left * 1000 : null;
    const notice = this.part("notice");
    if (notice) notice.hidden = !status.collecting;
    const info = this.part("info");
    if (info) {
      const faces = status.faces.map((f) => `${f.label.replace("_", " ")} ${Math.round(f.confidence * 100)}%`);
      info.textContent = `${status.fps.toFixed(1)} fps · camera ${status.camera_ok ? "ok" : "down"}` +
        (status.events_ok === false ? " · event log failing (disk full?)" : "") +
        (faces.length ? ` · ${faces.join(", ")}` : "");
    }
    if (`${view.title}|${view.detail}` !== this.shown) {
      this.shown = `${view.title}|${view.detail}`;
      window.maskgateLog.push({ t: Date.now(), door: this.door, state: status.state, title: view.title,
                                detail: view.detail, unlocked: status.door === "unlocked" });
      this.root.dispatchEvent(new CustomEvent("statuschange", { detail: status, bubbles: true }));
    }
    this.tick();
  }

  showFrame(blob) {
    const img = this.part("preview");
    if (!img) return;
    const previous = img.dataset.url;
    const url = URL.createObjectURL(new Blob([blob], { type: "image/jpeg" }));
    img.onload = () => previous && URL.revokeObjectURL(previous);
    img.src = url;
    img.hidden = false;
    this.part("placeholder").hidden = true;
    img.dataset.url = url;
    img.dataset.frames = ++this.frames;
  }

  tick() {
    const countdown = this.part("countdown");
    if (!countdown) return;
    const left = this.deadline === null ? 0 : (this.deadline - performance.now()) / 1000;
    countdown.hidden = left <= 0;
    if (left > 0) this.part("seconds").textContent = `${Math.ceil(left)} s`;
  }
}

LiveView.LOST_SECONDS = 10;
LiveView.pleaseWait = {
  state: "offline", door: "unknown", faces: [], fps: 0, camera_ok: false, seconds_left: null,
  view: { tone: "wait", icon: "hourglass", word: "WAIT", title: "Please wait", detail: "The door stays locked" },
};
LiveView.outOfServicePublic = {
  state: "offline", door: "unknown", faces: [], fps: 0, camera_ok: false, seconds_left: null,
  view: { tone: "locked", icon: "lock", word: "LOCKED", title: "Out of service — door locked",
          detail: "Please ask staff" },
};
LiveView.outOfService = {
  state: "offline", door: "unknown", faces: [], fps: 0, camera_ok: false, seconds_left: null,
  view: { tone: "locked", icon: "camera-off", word: "LOCKED", title: "Out of service — door locked",
          detail: "Reconnecting to the door…" },
};

function showClock(element) {
  const update = () => (element.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  update();
  setInterval(update, 10000);
}
