/* /register: POST /auth/register, then log in. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = dp.byId("register-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const username = dp.byId("register-username").value.trim();
    const password = dp.byId("register-password").value;
    if (password !== dp.byId("register-password2").value) {
      dp.say("register-message", "The two passwords differ.", "error");
      return;
    }
    dp.say("register-message", "Creating the account…");
    try {
      await dp.api("POST", "/auth/register", {
        username: username,
        password: password,
        email: dp.byId("register-email").value.trim(),
        full_name: dp.byId("register-full-name").value.trim(),
      }, { anonymous: true });
      await dp.api("POST", "/auth/login", { username: username, password: password }, { anonymous: true });
      location.assign("/");
    } catch (error) {
      dp.say("register-message", error.message, "error");
    }
  });
});
