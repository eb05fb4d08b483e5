// The SDK's own test plugin: each event's `sdk_check` key names what to exercise, and the plugin
// answers through edits, effects and its verdict, which tests/assembly/test.ts checks (and
// scripts/test-sdk.sh, for the checks that abort the call).

import {
  alert,
  api,
  Event,
  HandleEventBase,
  JsonValue,
  LockTarget,
  log,
  registerHandler,
  Severity,
  SessionStart,
  store,
  UserLogin,
} from "../../assembly/index";

export * from "../../assembly/exports";

class SdkCheck extends HandleEventBase {
  label: string = "";

  init(config: JsonValue): void {
    if (config.get("reject") !== null) {
      this.rejectConfig("rejected as the config asks");
      return;
    }
    const label = config.get("label");
    this.label = label === null ? "" : label.asString();
  }

  any(event: Event): void {
    const check = event.getString("sdk_check");
    if (check == "skip") this.skip();
    else if (check == "fail") this.fail("failed as the event asks");
    else if (check == "error") this.error("failed through the alias error()");
    else if (check == "write") write(event);
    else if (check == "mirror") mirrorEdits(event);
    else if (check == "edit-identity") editIdentity(event, event.getString("sdk_key"), event.getString("sdk_edit"));
    else if (check == "effects") effects(event);
    else if (check == "generic") readGeneric(event, this.label);
  }

  userLogin(event: UserLogin): void {
    if (event.getString("sdk_check") != "typed") return;
    event.setString("read_user", event.user);
    event.setString("read_uid", event.uid);
    event.setBool("read_success", event.status.success);
    event.setNumber("read_user_kind", event.userKind);
    event.setString("read_addr_remote", event.connection.addrRemote);
    event.setStringArray("read_user_roles", event.userRoles);
    const device = event.mfaDevice;
    event.setString("read_mfa_type", device === null ? "" : device.get("mfa_device_type")!.asString());
    event.user = "renamed";
    event.setString("read_user_after_set", event.user);
    event.connection.addrRemote = "198.51.100.7:40000";
    event.setString("read_addr_remote_after_set", event.connection.addrRemote);
    event.status.success = false;
    event.setBool("read_success_after_set", event.status.success);
  }

  sessionStart(event: SessionStart): void {
    if (event.getString("sdk_check") != "typed") return;
    event.setString("read_server_hostname", event.server.serverHostname);
    event.setString("read_sid", event.session.sid);
    event.setString("read_size", event.size);
  }
}

// Writes values that need escaping and every kind of edit.
function write(event: Event): void {
  event.setString("text", 'quote " backslash \\ newline \n tab \t control \u0001 accent é emoji 😀');
  event.setNumber("integer", 42);
  event.setNumber("fraction", -0.25);
  event.setBool("flag", false);
  event.setNull("nothing");
  event.setStringArray("list", ["a", 'b"c']);
  event.setJson("object", '{"k": [1, 2, {"deep": true}]}');
  event.setJsonAt(["mfa_device", "mfa_device_name"], '"renamed-device"');
  event.setJsonAt(["user_roles", "2"], '"appended-role"');
  event.setJsonAt(["created", "inner", "leaf"], "1");
  event.remove("user_agent");
  event.removeAt(["user_traits", "logins"]);
  event.remove("absent-key");
  event.setString("addr.remote", "redacted");
}

/**
 * Edits of every shape whose outcome reads must match what the host makes of them: test.ts runs it
 * on the plugin's own copy of an event and compares that with the event the host forwards.
 */
export function mirrorEdits(event: Event): void {
  event.setString("user", "in-place");
  event.setString("addr.remote", "a key with a dot");
  event.setJsonAt(["mfa_device", "mfa_device_name"], '"renamed-device"');
  event.setJsonAt(["user_roles", "2"], '"appended-role"');
  event.setJsonAt(["user_roles", "0"], '{"replaced": ["element"]}');
  event.setJsonAt(["user_roles", "0", "replaced", "1"], '"appended-inside"');
  event.setJsonAt(["created", "inner", "leaf"], "1");
  event.setJsonAt(["created", "inner", "second"], "[]");
  event.setStringArray("added_array", ["x"]);
  event.remove("user_agent");
  event.removeAt(["user_traits", "logins"]);
  event.removeAt(["user_traits", "db_users", "0"]);
  event.removeAt(["user_traits", "absent", "deeper"]);
  event.removeAt(["method", "not-an-object"]);
  event.remove("absent-key");
  // Removed, then set again: the host appends it after the keys the event arrived with.
  event.remove("cluster_name");
  event.setString("cluster_name", "appended");
  event.remove("added_array");
}

// Edits the identity key `key` the way `how` names, which aborts the call.
function editIdentity(event: Event, key: string, how: string): void {
  if (how == "remove") event.remove(key);
  else if (how == "nested") event.setJsonAt([key, "inner"], "1");
  else event.setString(key, "changed");
}

// Declares one of each effect and uses the token store.
function effects(event: Event): void {
  const metadata = new Map<string, string>();
  metadata.set("user", event.getString("user"));
  alert(Severity.CRITICAL, "effects check", true, metadata);
  const target = new LockTarget();
  target.user = event.getString("user");
  target.login = "root";
  api.createLock(target, "locked by the SDK check", 600);
  api.deleteLock("sdk-check-lock");
  const scope = "sdk-check/" + event.getString("user");
  const first = store.takeToken(scope, 60);
  const second = store.takeToken(scope, 60);
  const released = store.releaseTokens(scope);
  const third = store.takeToken(scope, 60);
  event.setStringArray("tokens", [first.toString(), second.toString(), released.toString(), third.toString()]);
  log.info("effects declared for " + event.type);
}

// Reads with the generic API and writes what it read back as fields.
function readGeneric(event: Event, label: string): void {
  event.setString("read_type", event.type);
  event.setString("read_label", label);
  event.setBool("read_has_addr", event.has("addr.remote"));
  event.setBool("read_has_absent", event.has("absent"));
  event.setString("read_addr_remote", event.getString("addr.remote"));
  event.setNumber("read_ei", event.getNumber("ei", -1));
  event.setBool("read_success", event.getBool("success", true));
  event.setString("read_nested", text(event.getAt(["mfa_device", "mfa_device_type"])));
  event.setString("read_array_item", text(event.getAt(["user_roles", "1"])));
  event.setStringArray("read_keys", event.keys().slice(0, 3));
  const traits = event.get("user_traits");
  event.setJson("read_traits", traits === null ? "null" : traits.toJson());
  event.setNumber("read_byte_length_positive", event.byteLength > 0 ? 1 : 0);
}

function text(value: JsonValue | null): string {
  return value === null ? "" : value.asString();
}

registerHandler(new SdkCheck());
