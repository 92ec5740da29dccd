// Pulse in-app demo: an end user's live inbox over the realtime WebSocket.
// Everything from the server is shown with textContent only: no markup is built from data.
"use strict";

const PING_EVERY_MS = 25000; // well inside the server's idle timeout (60 s by default)
const CLOSE_REASONS = {
  1000: "closed",
  1003: "message not understood",
  1006: "connection lost (or refused at the handshake: invalid or expired token)",
  1008: "too slow to read",
  1009: "message too big",
  1012: "server restarting: reconnect",
  4401: "invalid or expired token",
  4408: "idle for too long",
  4429: "too many connections for this user",
};

const $ = (id) => document.getElementById(id);
const items = new Map(); // notification id -> its <li>
let socket = null;
let token = null;
let pinger = null;

function log(text) {
  const line = `${new Date().toLocaleTimeString()}  ${text}\n`;
  $("log").textContent = (line + $("log").textContent).slice(0, 4000);
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
  $("connect").disabled = state === "connected" || state === "connecting";
  $("disconnect").disabled = state !== "connected";
}

function gateway() {
  return $("gateway-url").value.replace(/\/+$/, "");
}

async function getJson(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(`${response.status} ${body.detail || body.title || response.statusText}`);
  }
  return body;
}

async function refreshUnreadCount() {
  const body = await getJson(`${gateway()}/v1/inbox/unread-count`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  $("unread-badge").textContent = String(body.unread_count);
  $("unread-badge").dataset.count = String(body.unread_count);
}

function show(item, { missed = false } = {}) {
  if (items.has(item.id)) return;
  const li = document.createElement("li");
  li.dataset.id = item.id;
  li.className = `priority-${item.priority}`;
  const subject = document.createElement("div");
  subject.className = "subject";
  subject.textContent = item.subject || "(no subject)";
  const priority = document.createElement("span");
  priority.className = "tag";
  priority.textContent = item.priority;
  subject.append(priority);
  if (missed) {
    const tag = document.createElement("span");
    tag.className = "tag missed";
    tag.textContent = "missed";
    subject.append(tag);
  }
  const body = document.createElement("div");
  body.className = "body";
  body.textContent = item.body;
  const meta = document.createElement("div");
  meta.className = "meta";
  meta.textContent = new Date(item.created_at).toLocaleString();
  const button = document.createElement("button");
  button.type = "button";
  button.className = "mark-read secondary";
  button.textContent = "Mark read";
  button.addEventListener("click", () => {
    button.disabled = true;
    socket?.send(JSON.stringify({ type: "read", id: item.id }));
  });
  li.append(subject, body, meta, button);
  items.set(item.id, li);
  if (item.read_at) markRead(item.id);
  $("notifications").prepend(li);
  $("empty").hidden = true;
}

function markRead(id) {
  const li = items.get(id);
  if (!li) return;
  li.classList.add("read");
  const button = li.querySelector(".mark-read");
  button.disabled = true;
  button.textContent = "Read";
}

function onMessage(event) {
  const message = JSON.parse(event.data);
  switch (message.type) {
    case "missed_notifications":
      log(`connected: ${message.items.length} unread waiting`);
      // Newest first: shown oldest first at the top, so the newest ends up there.
      for (const item of [...message.items].reverse()) show(item, { missed: true });
      break;
    case "notification":
      log(`notification: ${message.notification.subject || message.notification.id}`);
      show(message.notification);
      break;
    case "read":
      for (const id of message.ids) markRead(id);
      break;
    case "error":
      log(`error: ${message.error} (${message.id})`);
      break;
    case "pong":
      return;
  }
  refreshUnreadCount().catch((error) => log(`unread count: ${error.message}`));
}

async function connect(event) {
  event.preventDefault();
  setStatus("connecting", "Connecting…");
  try {
    const issued = await getJson(`${gateway()}/v1/auth/token`, {
      method: "POST",
      headers: { Authorization: `Bearer ${$("api-key").value}`, "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: $("user-id").value, ttl_seconds: 3600 }),
    });
    token = issued.token;
  } catch (error) {
    setStatus("error", "Token refused");
    log(`POST /v1/auth/token: ${error.message}`);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(`${scheme}://${location.host}/v1/ws?token=${encodeURIComponent(token)}`);
  socket.addEventListener("open", () => {
    setStatus("connected", `Connected as ${$("user-id").value}`);
    pinger = setInterval(() => socket.send(JSON.stringify({ type: "ping" })), PING_EVERY_MS);
  });
  socket.addEventListener("message", onMessage);
  socket.addEventListener("close", (closed) => {
    clearInterval(pinger);
    const why = closed.reason || CLOSE_REASONS[closed.code] || "closed";
    setStatus(closed.code === 1000 ? "disconnected" : "error", `Disconnected (${closed.code})`);
    log(`closed ${closed.code}: ${why}`);
    socket = null;
  });
}

$("connect-form").addEventListener("submit", connect);
$("disconnect").addEventListener("click", () => socket?.close(1000));
const wanted = new URLSearchParams(location.search).get("gateway");
if (wanted) $("gateway-url").value = wanted;
