// The API layer: Redux Toolkit Query over the BFF. The browser sends its session cookie
// (credentials: "include") and the CSRF header; it never sees an access or refresh token.
import { createApi, fetchBaseQuery } from "@reduxjs/toolkit/query";

const CSRF_HEADER = "X-CSRF";

const rawBaseQuery = fetchBaseQuery({
  baseUrl: "/",
  credentials: "include",
  prepareHeaders: (headers) => {
    headers.set(CSRF_HEADER, "1");
    return headers;
  },
});

export function loginUrl() {
  const here = window.location.pathname + window.location.search;
  return "/bff/login?returnTo=" + encodeURIComponent(here);
}

// Set while the user logs out: a poll that meets the ended session then is no reason to
// send them to the login page (the logout decides where they go).
let leaving = false;

export function leave() {
  leaving = true;
}

// The BFF refreshes tokens itself; a 401 login_required means the session is over (or
// never was): go and log in instead of retrying.
export const baseQuery = async (args, api, extraOptions) => {
  const result = await rawBaseQuery(args, api, extraOptions);
  const ended = result.error?.status === 401 && result.error.data?.error === "login_required";
  if (ended && !leaving) {
    window.location.assign(loginUrl());
  }
  return result;
};

export const api = createApi({
  reducerPath: "api",
  baseQuery,
  tagTypes: ["Item"],
  endpoints: (build) => ({
    user: build.query({ query: () => "bff/user" }),
    items: build.query({
      query: () => "api/items",
      transformResponse: (body) => body.items,
      providesTags: ["Item"],
    }),
    addItem: build.mutation({
      query: (name) => ({ url: "api/items", method: "POST", body: { name } }),
      invalidatesTags: ["Item"],
    }),
    logout: build.mutation({ query: () => ({ url: "bff/logout", method: "POST" }) }),
  }),
});
