/* /login: POST /auth/login, then go where the user was going. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = dp.byId("login-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    dp.say("login-message", "Logging in…");
    try {
      await dp.api("POST", "/auth/login", {
        username: dp.byId("login-username").value.trim(),
        password: dp.byId("login-password").value,
      }, { anonymous: true });
      const next = dp.query("next");
      /* only a path of this site, never another origin */
      const safe = next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\");
      location.assign(safe ? next : "/");
    } catch (error) {
      dp.say("login-message", error.message, "error");
    }
  });
});
