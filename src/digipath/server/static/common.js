/* digipath pages: what every page uses (API calls with the CSRF token, DOM helpers). Text
   from the API is only ever put into the page with textContent, never as HTML. */
"use strict";

(function () {
  const API = "/api/v1";

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : null;
  }

  function describeError(body, status) {
    if (body && typeof body.detail === "string") return body.detail;
    if (body && Array.isArray(body.detail)) {
      return body.detail
        .map((item) => {
          const where = Array.isArray(item.loc) ? item.loc.filter((p) => p !== "body").join(".") : "";
          return (where ? where + ": " : "") + (item.msg || JSON.stringify(item));
        })
        .join("; ");
    }
    return "request failed (HTTP " + status + ")";
  }

  /* Call the API. `body` is sent as JSON, or as is when it is FormData. */
  async function api(method, path, body, options) {
    const headers = { Accept: "application/json" };
    const token = csrfToken();
    if (token && method !== "GET") headers["X-CSRF-Token"] = token;
    const init = { method: method, headers: headers, credentials: "same-origin" };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined && body !== null) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(API + path, init);
    let data = null;
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      data = await response.json();
    } else {
      data = await response.text();
    }
    if (!response.ok) {
      if (response.status === 401 && !(options && options.anonymous)) {
        const here = location.pathname + location.search;
        location.assign("/login?next=" + encodeURIComponent(here));
      }
      const error = new Error(describeError(data, response.status));
      error.status = response.status;
      throw error;
    }
    return data;
  }

  /* Create an element: el("a", {href: "/x", className: "c", text: "name"}, child, ...). */
  function el(tag, attributes) {
    const node = document.createElement(tag);
    const props = attributes || {};
    for (const key of Object.keys(props)) {
      const value = props[key];
      if (value === undefined || value === null || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on") && typeof value === "function") node.addEventListener(key.slice(2), value);
      else if (key in node && typeof value !== "string") node[key] = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (let i = 2; i < arguments.length; i += 1) {
      const child = arguments[i];
      if (child === undefined || child === null || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function clear(node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function date(iso) {
    if (!iso) return "";
    const value = new Date(iso);
    if (Number.isNaN(value.getTime())) return String(iso);
    return value.toLocaleString(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit",
      hour: "2-digit", minute: "2-digit", second: "2-digit",
    });
  }

  function duration(startIso, endIso) {
    if (!startIso) return "";
    const end = endIso ? new Date(endIso) : new Date();
    let seconds = Math.max(0, Math.round((end - new Date(startIso)) / 1000));
    const hours = Math.floor(seconds / 3600);
    seconds -= hours * 3600;
    const minutes = Math.floor(seconds / 60);
    seconds -= minutes * 60;
    return (hours ? hours + " h " : "") + (hours || minutes ? minutes + " min " : "") + seconds + " s";
  }

  function say(node, text, kind) {
    if (typeof node === "string") node = byId(node);
    if (!node) return;
    node.textContent = text || "";
    node.classList.remove("error", "ok");
    if (kind) node.classList.add(kind);
  }

  function statusBadge(status) {
    return el("span", { className: "status status-" + status, text: status });
  }

  function finished(status) {
    return status === "SUCCESS" || status === "FAILURE" || status === "REVOKED";
  }

  const KINDS = {
    train: "training",
    inference: "inference",
    inference_single: "inference single",
    wsi_apply: "whole slide",
    nuclei: "nuclei",
  };

  /** Whether a job of this kind has a slide and an output map for the viewer. */
  function onSlide(kind) {
    return kind === "wsi_apply" || kind === "nuclei";
  }

  function kindName(kind) {
    return KINDS[kind] || kind;
  }

  /* A modal confirmation: resolves true (OK) or false. `lines` are shown as a list. */
  function confirmDialog(title, lines, okText) {
    return new Promise((resolve) => {
      const list = el("ul");
      for (const line of lines || []) list.append(el("li", { text: line }));
      const ok = el("button", { type: "button", className: "primary", text: okText || "OK" });
      const cancel = el("button", { type: "button", text: "Cancel" });
      const dialog = el(
        "dialog", { className: "confirm-dialog" },
        el("h2", { text: title }), list, el("div", { className: "dialog-buttons" }, cancel, ok)
      );
      function close(answer) {
        dialog.close();
        dialog.remove();
        resolve(answer);
      }
      ok.addEventListener("click", () => close(true));
      cancel.addEventListener("click", () => close(false));
      dialog.addEventListener("cancel", (event) => {
        event.preventDefault();
        close(false);
      });
      document.body.append(dialog);
      dialog.showModal();
      ok.focus();
    });
  }

  /* A modal confirmation of a deletion: OK is enabled once `name` is typed exactly. Resolves
     true (deleted) or false. */
  function typedConfirm(title, lines, name, okText) {
    return new Promise((resolve) => {
      const list = el("ul");
      for (const line of lines || []) list.append(el("li", { text: line }));
      const input = el("input", { className: "confirm-name", autocomplete: "off", "aria-label": "name to confirm" });
      const ok = el("button", { type: "button", className: "danger", text: okText || "Delete", disabled: true });
      const cancel = el("button", { type: "button", text: "Cancel" });
      const dialog = el(
        "dialog", { className: "confirm-dialog typed-confirm" },
        el("h2", { text: title }), list,
        el("label", { className: "confirm-label" }, "Type ", el("strong", { text: name }), " to confirm", input),
        el("div", { className: "dialog-buttons" }, cancel, ok)
      );
      function close(answer) {
        dialog.close();
        dialog.remove();
        resolve(answer);
      }
      input.addEventListener("input", () => { ok.disabled = input.value !== name; });
      input.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && !ok.disabled) close(true);
      });
      ok.addEventListener("click", () => close(true));
      cancel.addEventListener("click", () => close(false));
      dialog.addEventListener("cancel", (event) => {
        event.preventDefault();
        close(false);
      });
      document.body.append(dialog);
      dialog.showModal();
      input.focus();
    });
  }

  /* Fill a <select> with options [{value, text}], keeping the chosen value when it is there. */
  function fillSelect(select, options, keep) {
    const previous = keep === undefined ? select.value : keep;
    clear(select);
    for (const option of options) {
      select.append(el("option", { value: String(option.value), text: option.text }));
    }
    if (options.some((o) => String(o.value) === String(previous))) select.value = String(previous);
  }

  function query(name) {
    return new URLSearchParams(location.search).get(name);
  }

  /* Editable member rows (user name + role) of the project forms. */
  function memberRow(container, member) {
    const name = el("input", { placeholder: "user name", className: "member-name", "aria-label": "member user name" });
    name.value = (member && member.username) || "";
    const role = el("select", { className: "member-role", "aria-label": "member role" },
      el("option", { value: "viewer", text: "viewer" }),
      el("option", { value: "owner", text: "owner" }));
    role.value = (member && member.role) || "viewer";
    const remove = el("button", { type: "button", text: "Remove", title: "remove this member" });
    const row = el("div", { className: "member-row" }, name, role, remove);
    remove.addEventListener("click", () => row.remove());
    container.append(row);
    return row;
  }

  function memberList(container) {
    const members = [];
    for (const row of container.querySelectorAll(".member-row")) {
      const username = row.querySelector(".member-name").value.trim();
      if (username) members.push({ username: username, role: row.querySelector(".member-role").value });
    }
    return members;
  }

  async function logout() {
    try {
      await api("POST", "/auth/logout", {}, { anonymous: true });
    } catch (error) {
      /* the session may be gone already */
    }
    location.assign("/login");
  }

  /* Unread notifications: jobs that finished since the notifications page was last opened. */
  const SEEN_KEY = "digipath.notifications.seen";

  function markSeen() {
    try {
      localStorage.setItem(SEEN_KEY, new Date().toISOString());
    } catch (error) {
      /* storage may be disabled */
    }
  }

  async function unreadBadge() {
    const badge = byId("unread-badge");
    if (!badge || !csrfToken()) return;
    let seen = null;
    try {
      seen = localStorage.getItem(SEEN_KEY);
    } catch (error) {
      seen = null;
    }
    try {
      const page = await api("GET", "/jobs?per_page=50", null, { anonymous: true });
      const since = seen ? new Date(seen) : new Date(0);
      const count = page.items.filter((job) => job.finished && new Date(job.finished) > since).length;
      badge.textContent = count ? String(count) : "";
      badge.classList.toggle("hidden", count === 0);
      badge.title = count + " finished job(s) since you last looked";
    } catch (error) {
      badge.classList.add("hidden");
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["logout-button", "logout-confirm"]) {
      const button = byId(id);
      if (button) button.addEventListener("click", logout);
    }
    if (location.pathname === "/notifications") markSeen();
    else unreadBadge();
  });

  window.dp = {
    api: api, el: el, clear: clear, byId: byId, date: date, duration: duration, say: say,
    statusBadge: statusBadge, finished: finished, kindName: kindName, onSlide: onSlide,
    confirmDialog: confirmDialog, typedConfirm: typedConfirm, memberRow: memberRow, memberList: memberList, fillSelect: fillSelect, query: query, csrfToken: csrfToken,
  };
})();
