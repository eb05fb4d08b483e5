// alert: raises an alert, with the event attached, when a role is created, updated or deleted, and
// when someone logs in as root (a session started, or a login, with the OS login `root`).

import {
  alert,
  HandleEventBase,
  registerHandler,
  RoleCreate,
  RoleDelete,
  RoleUpdate,
  SessionStart,
  Severity,
  UserEvent,
  UserLogin,
} from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

class RoleAndRootAlerts extends HandleEventBase {
  roleCreated(event: RoleCreate): void {
    roleChanged(event, "created");
  }

  roleUpdated(event: RoleUpdate): void {
    roleChanged(event, "updated");
  }

  roleDeleted(event: RoleDelete): void {
    roleChanged(event, "deleted");
  }

  sessionStart(event: SessionStart): void {
    if (event.login == "root") rootLogin(event, "started a session as root on " + event.server.serverHostname);
  }

  userLogin(event: UserLogin): void {
    if (event.login == "root") rootLogin(event, "logged in as root");
  }
}

// RoleUpdate and RoleDelete are RoleCreate: Teleport's three role events have the same keys.
function roleChanged(event: RoleCreate, change: string): void {
  const role = event.resource.name;
  const metadata = new Map<string, string>();
  metadata.set("event", event.type);
  metadata.set("role", role);
  metadata.set("user", event.user);
  alert(Severity.WARNING, "role " + role + " " + change + " by " + event.user, true, metadata);
}

// A view of any event that names who acted (UserEvent: Teleport's UserMetadata) will do.
function rootLogin(event: UserEvent, what: string): void {
  const metadata = new Map<string, string>();
  metadata.set("event", event.type);
  metadata.set("user", event.user);
  metadata.set("login", "root");
  alert(Severity.CRITICAL, event.user + " " + what, true, metadata);
}

registerHandler(new RoleAndRootAlerts());
