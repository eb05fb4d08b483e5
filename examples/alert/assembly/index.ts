// alert: raises an alert, with the event attached, when a role is created, updated or deleted, and
// when someone logs in as root (a session started, or a login, with the OS login `root`).

import {
  alert,
  Event,
  HandleEventBase,
  registerHandler,
  RoleCreate,
  RoleDelete,
  RoleUpdate,
  SessionStart,
  Severity,
  UserLogin,
} from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

class RoleAndRootAlerts extends HandleEventBase {
  roleCreated(event: RoleCreate): void {
    roleChanged(event, event.name, "created");
  }

  roleUpdated(event: RoleUpdate): void {
    roleChanged(event, event.name, "updated");
  }

  roleDeleted(event: RoleDelete): void {
    roleChanged(event, event.name, "deleted");
  }

  sessionStart(event: SessionStart): void {
    if (event.login == "root") rootLogin(event, event.user, "started a session as root on " + event.serverHostname);
  }

  userLogin(event: UserLogin): void {
    if (event.login == "root") rootLogin(event, event.user, "logged in as root");
  }
}

function roleChanged(event: Event, role: string, change: string): void {
  const user = event.getString("user");
  const metadata = new Map<string, string>();
  metadata.set("event", event.type);
  metadata.set("role", role);
  metadata.set("user", user);
  alert(Severity.WARNING, "role " + role + " " + change + " by " + user, true, metadata);
}

function rootLogin(event: Event, user: string, what: string): void {
  const metadata = new Map<string, string>();
  metadata.set("event", event.type);
  metadata.set("user", user);
  metadata.set("login", "root");
  alert(Severity.CRITICAL, user + " " + what, true, metadata);
}

registerHandler(new RoleAndRootAlerts());
