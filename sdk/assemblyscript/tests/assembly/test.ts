// The SDK's tests, run by `eventplug test --build build/test.wasm --fixtures tests/fixtures` with the
// configuration {"label": "sdk-test"} (see package.json).

export * from "./plugin";

import { mirrorEdits } from "./plugin";
import { Event, isIdentityKey, JsonKind, jsonString, parseJson, Severity, UserLogin } from "../../assembly/index";
import { JsonParser } from "../../assembly/json";
import {
  ApiRequestKind,
  assertEqual,
  assertOutcome,
  assertTrue,
  getAlerts,
  getAPIRequests,
  getFixture,
  handleEvent,
  Outcome,
} from "../../assembly/testing";

/** The event JSON with `"sdk_check": check` added as its first key. */
function withCheck(json: string, check: string): string {
  const open = json.indexOf("{");
  return '{"sdk_check":' + jsonString(check) + "," + json.substring(open + 1);
}

function jsonTextAndValues(): void {
  assertEqual(jsonString("plain"), '"plain"', "a plain string is only quoted");
  assertEqual(jsonString('a"b\\c\nd\re\tf\u0001g'), '"a\\"b\\\\c\\nd\\re\\tf\\u0001g"', "escapes");
  assertEqual(jsonString("é😀"), '"é😀"', "non-ASCII text stays as it is");
  assertEqual(jsonString("lone \ud800 surrogate"), '"lone \\ufffd surrogate"', "a lone surrogate becomes U+FFFD");

  const value = parseJson('{"addr.remote": "1.2.3.4:5", "n": -1.5e2, "t": true, "f": false, "z": null,' +
    ' "list": ["x", 2, "y"], "nested": {"a": {"b": "deep"}}, "esc": "\\u00e9\\ud83d\\ude00\\n"}');
  assertEqual(value.kind, JsonKind.Object, "an object parses as an object");
  assertEqual(value.length, 8, "members of the object");
  assertEqual(value.get("addr.remote")!.asString(), "1.2.3.4:5", "a key with a dot is one key");
  assertTrue(value.get("addr") === null, "no path splitting on dots");
  assertEqual(value.get("n")!.asNumber(), -150.0, "numbers");
  assertEqual(value.get("t")!.asBool(), true, "true");
  assertEqual(value.get("f")!.kind, JsonKind.Bool, "false is a boolean, not absent");
  assertEqual(value.get("f")!.asBool(true), false, "false");
  assertTrue(value.get("z")!.isNull, "null");
  assertEqual(value.get("list")!.length, 3, "array length");
  assertEqual(value.get("list")!.at(1)!.asNumber(), 2.0, "array element");
  assertTrue(value.get("list")!.at(3) === null, "past the end of an array");
  assertEqual(value.get("list")!.asStringArray().join(","), "x,y", "string elements of an array");
  assertEqual(value.getAt(["nested", "a", "b"])!.asString(), "deep", "a path into nested objects");
  assertEqual(value.getAt(["list", "2"])!.asString(), "y", "a path segment of digits indexes an array");
  assertEqual(value.get("esc")!.asString(), "é😀\n", "escapes in parsed strings");
  assertTrue(value.get("esc")!.equalsString("é😀\n"), "comparing a string without decoding it");
  assertEqual(value.keys().join(","), "addr.remote,n,t,f,z,list,nested,esc", "keys in order");
  const members = value.values();
  assertEqual(members.length, 8, "values() of an object: one per key");
  assertEqual(members[0].asString(), "1.2.3.4:5", "values() in the order of keys()");
  assertTrue(members[4].isNull, "values() keeps null members");
  assertEqual(members[7].asString(), "é😀\n", "the last member's value");
  const elements = value.get("list")!.values();
  assertEqual(elements.length, 3, "values() of an array: its elements");
  assertEqual(elements[1].asNumber(), 2.0, "array elements in order");
  assertEqual(value.get("n")!.values().length, 0, "values() of a number is empty");
  assertEqual(value.get("n")!.asString("fallback"), "fallback", "a fallback for the wrong kind");
  assertEqual(
    value.toJson(),
    '{"addr.remote":"1.2.3.4:5","n":-150,"t":true,"f":false,"z":null,"list":["x",2,"y"],"nested":{"a":{"b":"deep"}},"esc":"é😀\\n"}',
    "compact JSON text",
  );

  const parser = new JsonParser();
  assertTrue(parser.parse(String.UTF8.encode('{"a": [1, 2')) === null, "truncated JSON is refused");
  assertEqual(parser.error, "invalid JSON at byte 11: unexpected end of text", "the parser says where and why");
  assertTrue(parser.parse(String.UTF8.encode('{"a": 1} x')) === null, "text after the value is refused");
  assertTrue(parser.parse(String.UTF8.encode("[01]")) === null, "a leading zero is refused");
}

function forwardsUnchanged(): void {
  const fixture = getFixture(1);
  const result = handleEvent(fixture);
  assertOutcome(result, Outcome.Forwarded, "an event the plugin does not touch");
  assertEqual(result.output.trimEnd(), fixture.trimEnd(), "forwarded byte for byte");
}

function typedViews(): void {
  const login = handleEvent(withCheck(getFixture(1), "typed"));
  assertOutcome(login, Outcome.Modified, "typed reads written back");
  const event = login.event!;
  assertEqual(event.get("read_user")!.asString(), "alice", "UserLogin.user (UserEvent)");
  assertEqual(event.get("read_uid")!.asString(), "6513270e-269e-4d37-b2a7-4de452e6b438", "UserLogin.uid (AuditEvent)");
  assertEqual(event.get("read_success")!.asBool(), true, "UserLogin.status.success");
  assertEqual(event.get("read_user_kind")!.asNumber(), 1.0, "UserLogin.userKind");
  assertEqual(event.get("read_addr_remote")!.asString(), "203.0.113.10:51234", "UserLogin.connection.addrRemote");
  assertEqual(event.get("read_user_roles")!.asStringArray().join(","), "access,editor", "UserLogin.userRoles");
  assertEqual(event.get("read_mfa_type")!.asString(), "TOTP", "UserLogin.mfaDevice");
  assertEqual(event.get("user")!.asString(), "renamed", "a typed setter edits the event");
  assertEqual(event.get("read_user_after_set")!.asString(), "renamed", "a typed setter reads back");
  assertEqual(event.get("addr.remote")!.asString(), "198.51.100.7:40000", "a block's setter edits the event");
  assertEqual(event.get("read_addr_remote_after_set")!.asString(), "198.51.100.7:40000", "a block's setter reads back");
  assertEqual(event.get("success")!.asBool(true), false, "Status.success = false");
  assertEqual(event.get("read_success_after_set")!.asBool(true), false, "Status.success reads back");

  const session = handleEvent(withCheck(getFixture(2), "typed"));
  assertOutcome(session, Outcome.Modified, "typed session reads written back");
  assertEqual(session.event!.get("read_server_hostname")!.asString(), "ip-10-1-2-3", "SessionStart.server.serverHostname");
  assertEqual(session.event!.get("read_sid")!.asString(), "907a70c3-1012-4037-b64c-e4228c38fb29", "SessionStart.session.sid");
  assertEqual(session.event!.get("read_size")!.asString(), "80:24", "SessionStart.size");
}

// Reads during the call see the call's edits, exactly as the host applies them afterwards.
function editsReadBack(): void {
  const json = withCheck(getFixture(1), "mirror");
  const forwarded = handleEvent(json);
  assertOutcome(forwarded, Outcome.Modified, "edits of every shape");
  const local = new Event("user.login", 0, parseJson(json));
  mirrorEdits(local);
  assertEqual(local.toJson(), forwarded.event!.toJson(), "Event.toJson() with the edits is the event the host forwards");
  assertEqual(local.getString("user"), "in-place", "a set key reads back");
  assertEqual(local.getString("addr.remote"), "a key with a dot", "a set key with a dot reads back");
  assertEqual(local.getAt(["mfa_device", "mfa_device_name"])!.asString(), "renamed-device", "a nested set reads back");
  assertEqual(local.getAt(["mfa_device", "mfa_device_type"])!.asString(), "TOTP", "its siblings stay");
  assertEqual(local.getAt(["user_roles", "0", "replaced", "1"])!.asString(), "appended-inside", "a set below a set reads back");
  assertEqual(local.getAt(["created", "inner", "leaf"])!.asNumber(), 1.0, "objects created along a path");
  assertTrue(!local.has("user_agent"), "a removed key is absent");
  assertTrue(local.getAt(["user_traits", "logins"]) === null, "a removed member is absent");
  assertEqual(local.get("user_roles")!.length, 3, "an appended element counts");
  const keys = local.keys();
  assertEqual(keys[keys.length - 2], "created", "added keys come after the keys the event arrived with");
  assertEqual(keys[keys.length - 1], "cluster_name", "a key removed and set again comes last");
  assertTrue(!keys.includes("added_array"), "an added key that was removed again is gone");
  assertTrue(!keys.includes("user_agent"), "a removed key is not among the keys");
  assertEqual(local.getAt([])!.get("cluster_name")!.asString(), "appended", "getAt([]): the whole event, edited");

  const login = new UserLogin("user.login", 0, parseJson(getFixture(1)));
  assertEqual(login.login, "", "an absent key reads as empty");
  login.login = "root";
  assertEqual(login.login, "root", "a typed setter reads back at once");
  assertEqual(login.getString("login"), "root", "and so does the generic read of its key");
  login.connection.addrLocal = "10.0.0.1:3022";
  assertEqual(login.connection.addrLocal, "10.0.0.1:3022", "a block's setter reads back");
  login.setString("user", "generic");
  assertEqual(login.user, "generic", "a typed getter sees a generic edit");
  assertEqual(login.edits.length, 3, "each change is one edit");

  assertTrue(isIdentityKey("uid") && isIdentityKey("ei") && isIdentityKey("sid"), "identity keys");
  assertTrue(!isIdentityKey("user") && !isIdentityKey("cluster_name"), "other keys are not identity keys");
}

function edits(): void {
  const result = handleEvent(withCheck(getFixture(1), "write"));
  assertOutcome(result, Outcome.Modified, "every kind of edit");
  const event = result.event!;
  assertEqual(
    event.get("text")!.asString(),
    'quote " backslash \\ newline \n tab \t control \u0001 accent é emoji 😀',
    "a string that needs escaping arrives intact",
  );
  assertTrue(result.output.includes('"integer":42,'), "whole numbers are written without a fraction");
  assertEqual(event.get("fraction")!.asNumber(), -0.25, "fractions");
  assertEqual(event.get("flag")!.kind, JsonKind.Bool, "setBool writes a boolean");
  assertEqual(event.get("flag")!.asBool(true), false, "setBool(false)");
  assertTrue(event.get("nothing")!.isNull, "setNull");
  assertEqual(event.get("list")!.asStringArray().join("|"), 'a|b"c', "setStringArray");
  assertEqual(event.getAt(["object", "k", "2", "deep"])!.asBool(), true, "setJson with nested JSON");
  assertEqual(event.getAt(["mfa_device", "mfa_device_name"])!.asString(), "renamed-device", "setJsonAt into an object");
  assertEqual(event.getAt(["mfa_device", "mfa_device_type"])!.asString(), "TOTP", "siblings of an edit stay");
  assertEqual(event.get("user_roles")!.asStringArray().join(","), "access,editor,appended-role", "setJsonAt appends at the array's length");
  assertEqual(event.getAt(["created", "inner", "leaf"])!.asNumber(), 1.0, "setJsonAt creates missing objects");
  assertTrue(!event.has("user_agent"), "remove");
  assertTrue(event.get("user_traits")!.get("logins") === null, "removeAt");
  assertEqual(event.get("user_traits")!.get("db_users")!.asStringArray().join(","), "alice", "removeAt leaves siblings");
  assertEqual(event.get("addr.remote")!.asString(), "redacted", "a key with a dot is edited as one key");
}

function verdicts(): void {
  assertOutcome(handleEvent(withCheck(getFixture(1), "skip")), Outcome.Skipped, "skip()");
  const failed = handleEvent(withCheck(getFixture(1), "fail"));
  assertOutcome(failed, Outcome.Failed, "fail()");
  assertTrue(failed.output.includes("failed as the event asks"), "the failure's message reaches the host: " + failed.output);
  const alias = handleEvent(withCheck(getFixture(1), "error"));
  assertOutcome(alias, Outcome.Failed, "error(), the alias of fail()");
  assertTrue(alias.output.includes("failed through the alias error()"), "the alias's message reaches the host: " + alias.output);
}

function effects(): void {
  const alertsBefore = getAlerts().length;
  const requestsBefore = getAPIRequests().length;
  const result = handleEvent(withCheck(getFixture(1), "effects"));
  assertOutcome(result, Outcome.Modified, "effects check");
  assertEqual(result.event!.get("tokens")!.asStringArray().join(","), "1,2,2,1", "takeToken counts, releaseTokens empties");

  const alerts = getAlerts();
  assertEqual(alerts.length, alertsBefore + 1, "one alert declared");
  const declared = alerts[alerts.length - 1];
  assertEqual(declared.message, "effects check", "alert message");
  assertEqual(declared.severity, Severity.CRITICAL, "alert severity");
  assertEqual(declared.includeEvent, true, "alert includes the event");
  assertEqual(declared.metadata.get("user"), "alice", "alert metadata");

  const requests = getAPIRequests();
  assertEqual(requests.length, requestsBefore + 2, "a lock created and one deleted");
  const create = requests[requests.length - 2];
  assertEqual(create.kind, ApiRequestKind.CreateLock, "first request");
  const lock = create.createLock!;
  assertEqual(lock.target!.user, "alice", "lock target user");
  assertEqual(lock.target!.login, "root", "lock target login");
  assertEqual(lock.message, "locked by the SDK check", "lock message");
  assertEqual(lock.ttlSeconds, <i64>600, "lock TTL");
  const remove = requests[requests.length - 1];
  assertEqual(remove.kind, ApiRequestKind.DeleteLock, "second request");
  assertEqual(remove.deleteLock!.name, "sdk-check-lock", "deleted lock name");
}

function genericAccess(): void {
  const result = handleEvent(withCheck(getFixture(1), "generic"));
  assertOutcome(result, Outcome.Modified, "generic reads written back");
  const event = result.event!;
  assertEqual(event.get("read_type")!.asString(), "user.login", "Event.type");
  assertEqual(event.get("read_label")!.asString(), "sdk-test", "the config reached init");
  assertEqual(event.get("read_has_addr")!.asBool(), true, "has() a key with a dot");
  assertEqual(event.get("read_has_absent")!.asBool(true), false, "has() an absent key");
  assertEqual(event.get("read_addr_remote")!.asString(), "203.0.113.10:51234", "getString");
  assertEqual(event.get("read_ei")!.asNumber(), 0.0, "getNumber");
  assertEqual(event.get("read_success")!.asBool(), true, "getBool");
  assertEqual(event.get("read_nested")!.asString(), "TOTP", "getAt into an object");
  assertEqual(event.get("read_array_item")!.asString(), "editor", "getAt into an array");
  assertEqual(event.get("read_keys")!.asStringArray().join(","), "sdk_check,ei,event", "keys()");
  assertEqual(event.getAt(["read_traits", "db_users", "0"])!.asString(), "alice", "toJson of a nested value");
  assertEqual(event.get("read_byte_length_positive")!.asNumber(), 1.0, "Event.byteLength");

  const custom = handleEvent('{"sdk_check":"generic","event":"custom.unknown","time":"2024-02-23T18:56:50Z","ei":7}');
  assertOutcome(custom, Outcome.Modified, "an event type the SDK does not know");
  assertEqual(custom.event!.get("read_type")!.asString(), "custom.unknown", "its type");
  assertEqual(custom.event!.get("read_ei")!.asNumber(), 7.0, "its fields");
}

function prototypeFixture(): void {
  const event = parseJson(getFixture(3));
  assertEqual(event.get("event")!.asString(), "user.login", "the prototype's Metadata.Type");
  assertEqual(event.get("ei")!.asNumber(), 1.0, "Metadata.Index");
  assertEqual(event.get("user")!.asString(), "foo", "the User block is flattened");
  assertEqual(event.get("success")!.asBool(true), false, "the Status block is flattened");
  assertEqual(event.get("addr.remote")!.asString(), "192.168.0.1:51234", "ConnectionMetadata.RemoteAddr");
  assertEqual(event.get("method")!.asString(), "local", "an event field");

  // As the prototype's own fixtures are written: wrapped in types.OneOf, blocks under field names.
  const wrapped = parseJson(getFixture(4));
  assertEqual(wrapped.get("event")!.asString(), "user.login", "the event inside the message name");
  assertEqual(wrapped.get("ei")!.kind, JsonKind.Number, "an int64 written as a string becomes a number");
  assertEqual(wrapped.get("user")!.asString(), "foo", "the block under its field name User");
  assertEqual(wrapped.get("addr.remote")!.asString(), "192.168.0.1:51234", "Connection.RemoteAddr");
  assertEqual(wrapped.getAt(["mfa_device", "mfa_device_uuid"])!.asString(), "d23f0824-128b-4f33-8c5c-7fd0a6a3a450", "nested Go names");
}

export function test(): void {
  jsonTextAndValues();
  forwardsUnchanged();
  typedViews();
  editsReadBack();
  edits();
  verdicts();
  effects();
  genericAccess();
  prototypeFixture();
}
