/* /: the projects list and "Create project". */
"use strict";

async function loadProjects() {
  const body = document.querySelector("#projects-table tbody");
  try {
    const projects = await dp.api("GET", "/projects");
    dp.clear(body);
    if (!projects.length) {
      body.append(dp.el("tr", {}, dp.el("td", { colspan: "5", className: "empty", text: "No projects yet: create one." })));
    }
    for (const project of projects) {
      body.append(dp.el("tr", { dataset: { projectId: String(project.id) } },
        dp.el("td", {}, dp.el("a", { href: "/projects/" + project.id, className: "project-link", text: project.name })),
        dp.el("td", { text: project.task }),
        dp.el("td", { text: project.role || "" }),
        dp.el("td", { text: project.members.map((m) => m.username + " (" + m.role + ")").join(", ") }),
        dp.el("td", { text: dp.date(project.created) })));
    }
  } catch (error) {
    dp.say("projects-message", error.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const members = dp.byId("project-members");
  dp.byId("add-member").addEventListener("click", () => dp.memberRow(members).querySelector("input").focus());
  dp.byId("project-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const project = await dp.api("POST", "/projects", {
        name: dp.byId("project-name").value,
        task: dp.byId("project-task").value,
        description: dp.byId("project-description").value,
        members: dp.memberList(members),
      });
      location.assign("/projects/" + project.id);
    } catch (error) {
      dp.say("project-message", error.message, "error");
    }
  });
  loadProjects();
});
