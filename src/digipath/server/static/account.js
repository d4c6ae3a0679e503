/* /account: profile, password, API tokens, account deletion. */
"use strict";

(function () {
  const $ = dp.byId;

  async function loadTokens() {
    const body = document.querySelector("#tokens-table tbody");
    try {
      const tokens = await dp.api("GET", "/tokens");
      dp.clear(body);
      if (!tokens.length) body.append(dp.el("tr", {}, dp.el("td", { colspan: "5", className: "empty", text: "No API tokens." })));
      for (const token of tokens) {
        const revoke = dp.el("button", { type: "button", className: "danger", text: "Revoke" });
        revoke.addEventListener("click", async () => {
          if (!(await dp.confirmDialog("Revoke the token " + token.name + "?", ["Scripts using it stop working."], "Revoke"))) return;
          try {
            await dp.api("DELETE", "/tokens/" + token.id);
            dp.say("token-message", "Token revoked.", "ok");
          } catch (error) {
            dp.say("token-message", error.message, "error");
          }
          loadTokens();
        });
        body.append(dp.el("tr", {},
          dp.el("td", { text: token.name }), dp.el("td", {}, dp.el("code", { text: token.prefix + "…" })),
          dp.el("td", { text: dp.date(token.created) }), dp.el("td", { text: token.last_used ? dp.date(token.last_used) : "never" }),
          dp.el("td", {}, revoke)));
      }
    } catch (error) {
      dp.say("token-message", error.message, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    try {
      const me = await dp.api("GET", "/auth/me");
      const list = dp.clear($("account-facts"));
      for (const [term, value] of [["User name", me.user.username], ["Full name", me.user.full_name || "—"],
        ["E-mail", me.user.email || "—"], ["Member since", dp.date(me.user.created)]]) {
        list.append(dp.el("dt", { text: term }), dp.el("dd", { text: value }));
      }
    } catch (error) {
      dp.say("password-message", error.message, "error");
    }
    loadTokens();
    $("password-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if ($("new-password").value !== $("new-password2").value) return dp.say("password-message", "The two new passwords differ.", "error");
      try {
        await dp.api("POST", "/auth/password", { old_password: $("old-password").value, new_password: $("new-password").value });
        dp.say("password-message", "Password changed; your other sessions were closed.", "ok");
        $("password-form").reset();
      } catch (error) {
        dp.say("password-message", error.message, "error");
      }
    });
    $("token-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const made = await dp.api("POST", "/tokens", { name: $("token-name").value.trim() || "script" });
        const box = $("new-token");
        box.textContent = made.token;
        box.classList.remove("hidden");
        dp.say("token-message", "Copy the token now: it is not shown again.", "ok");
        loadTokens();
      } catch (error) {
        dp.say("token-message", error.message, "error");
      }
    });
    $("delete-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!(await dp.confirmDialog("Delete your account?", ["This cannot be undone.", "Projects you alone own are deleted too."], "Delete"))) return;
      try {
        await dp.api("DELETE", "/auth/account", { password: $("delete-password").value });
        location.assign("/login");
      } catch (error) {
        dp.say("delete-message", error.message, "error");
      }
    });
  });
})();
