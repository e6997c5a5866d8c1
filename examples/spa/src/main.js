// The page: renders the store; no token anywhere, only what /bff/user says about the user.
import { configureStore } from "@reduxjs/toolkit";
import { api, leave, loginUrl } from "./api.js";

const POLL_MS = Number(new URLSearchParams(window.location.search).get("poll") || 1000);

const store = configureStore({
  reducer: { [api.reducerPath]: api.reducer },
  middleware: (getDefault) => getDefault().concat(api.middleware),
});

const $ = (id) => document.getElementById(id);
let loads = 0;
let itemsSubscription = null;

function render() {
  const state = store.getState();
  const user = api.endpoints.user.select()(state);
  if (user.isLoading || user.isUninitialized) {
    return;
  }
  if (user.isError) {
    $("status").textContent = "";
    $("error").textContent = "Cannot reach the BFF.";
    return;
  }
  const signedIn = Boolean(user.data?.authenticated);
  $("status").textContent = "";
  $("signed-out").hidden = signedIn;
  $("signed-in").hidden = !signedIn;
  if (!signedIn) {
    $("login").href = loginUrl(); // come back to this very page (and its query) after login
    return;
  }
  const claims = user.data.claims || {};
  $("user").textContent = claims.name || claims.preferred_username || claims.sub || "someone";
  if (itemsSubscription === null) {
    itemsSubscription = store.dispatch(
      api.endpoints.items.initiate(undefined, { subscriptionOptions: { pollingInterval: POLL_MS } }),
    );
  }
  const items = api.endpoints.items.select()(state);
  if (items.isError) {
    $("error").textContent = `Loading items failed (${items.error.status}).`;
  } else if (items.isSuccess) {
    $("error").textContent = "";
    const list = $("items");
    list.replaceChildren(
      ...items.data.map((item) => {
        const entry = document.createElement("li");
        entry.textContent = item.name ?? JSON.stringify(item);
        return entry;
      }),
    );
  }
}

let lastItemsFetch = 0;
let failures = 0;
let lastFailure = null;
store.subscribe(() => {
  const items = api.endpoints.items.select()(store.getState());
  if (items.isSuccess && items.fulfilledTimeStamp !== lastItemsFetch) {
    lastItemsFetch = items.fulfilledTimeStamp;
    loads += 1;
    $("loads").textContent = String(loads);
  }
  if (items.isError && items.error !== lastFailure) {
    lastFailure = items.error;
    failures += 1;
    $("failures").textContent = String(failures);
  }
  render();
});

$("add").addEventListener("submit", async (event) => {
  event.preventDefault();
  const name = $("item-name").value.trim();
  if (name) {
    await store.dispatch(api.endpoints.addItem.initiate(name));
    $("item-name").value = "";
  }
});

$("logout").addEventListener("click", async () => {
  leave();
  const result = await store.dispatch(api.endpoints.logout.initiate());
  window.location.assign(result.data?.redirect || "/");
});

store.dispatch(api.endpoints.user.initiate());
