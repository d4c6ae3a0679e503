/* /reset-password: ask for a token, then set a new password with it. */
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  dp.byId("reset-request-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const answer = await dp.api("POST", "/auth/password-reset", {
        username: dp.byId("reset-username").value.trim(),
      }, { anonymous: true });
      dp.say("reset-request-message", answer.result + ". Enter it below.", "ok");
      dp.byId("reset-token").focus();
    } catch (error) {
      dp.say("reset-request-message", error.message, "error");
    }
  });
  dp.byId("reset-confirm-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const password = dp.byId("reset-password").value;
    if (password !== dp.byId("reset-password2").value) {
      dp.say("reset-confirm-message", "The two passwords differ.", "error");
      return;
    }
    try {
      await dp.api("POST", "/auth/password-reset/confirm", {
        token: dp.byId("reset-token").value.trim(),
        password: password,
      }, { anonymous: true });
      dp.say("reset-confirm-message", "Password changed. You can log in now.", "ok");
    } catch (error) {
      dp.say("reset-confirm-message", error.message, "error");
    }
  });
});
