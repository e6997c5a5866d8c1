// The BFF demo's page: plain JavaScript, no build step and no token. Like any app behind the
// BFF (examples/spa does the same with Redux Toolkit Query), it calls its own origin with the
// session cookie and the CSRF header, and goes to /bff/login when told login_required.
"use strict";

const POLL_MS = Number(new URLSearchParams(window.location.search).get("poll") || 2000);
const $ = (id) => document.getElementById(id);
let loads = 0;
let failures = 0;
let leaving = false; // logging out: an ended session is then no reason to log in

function loginUrl() {
  const here = window.location.pathname + window.location.search;
  return "/bff/login?returnTo=" + encodeURIComponent(here);
}

async function call(path, options = {}) {
  const headers = { "X-CSRF": "1", ...(options.headers || {}) };
  const response = await fetch(path, { credentials: "include", ...options, headers });
  if (response.status === 401 && !leaving) {
    const body = await response.clone().json().catch(() => ({}));
    if (body.error === "login_required") {
      window.location.assign(loginUrl());
    }
  }
  return response;
}

async function loadItems() {
  try {
    const response = await call("/api/items");
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    const body = await response.json();
    $("items").replaceChildren(
      ...body.items.map((item) => {
        const entry = document.createElement("li");
        entry.textContent = item.name ?? JSON.stringify(item);
        return entry;
      }),
    );
    loads += 1;
    $("loads").textContent = String(loads);
    $("error").textContent = "";
  } catch (error) {
    if (!leaving) {
      failures += 1;
      $("failures").textContent = String(failures);
      $("error").textContent = `Loading items failed (${error.message}).`;
    }
  }
}

async function poll() {
  await loadItems();
  if (!leaving) {
    window.setTimeout(poll, POLL_MS);
  }
}

async function start() {
  let user;
  try {
    const response = await call("/bff/user");
    if (!response.ok) {
      throw new Error(`HTTP ${response.status}`);
    }
    user = await response.json();
  } catch (error) {
    $("status").textContent = "";
    $("error").textContent = `Cannot reach the BFF (${error.message}).`;
    return;
  }
  $("status").textContent = "";
  if (!user.authenticated) {
    $("login").href = loginUrl(); // come back to this very page (and its query) after login
    $("signed-out").hidden = false;
    return;
  }
  const claims = user.claims || {};
  $("user").textContent = claims.name || claims.preferred_username || claims.sub || "someone";
  $("signed-in").hidden = false;
  poll();
}

$("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("item-name").value.trim();
  if (!name) {
    return;
  }
  const response = await call("/api/items", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name }),
  });
  if (response.ok) {
    $("item-name").value = "";
    await loadItems();
  } else {
    $("error").textContent = `Adding the item failed (HTTP ${response.status}).`;
  }
});

$("logout").addEventListener("click", async () => {
  leaving = true;
  const response = await call("/bff/logout", { method: "POST" });
  const body = await response.json().catch(() => ({}));
  window.location.assign(body.redirect || "/");
});

start();
