// Tests of the redact plugin, run by `npm test` with the config
// {"fields": ["addr.remote", "user_agent", ["mfa_device", "mfa_device_uuid"], ["server_labels", "team"]]}.

export * from "./index";

import { assertEqual, assertOutcome, assertTrue, getFixture, handleEvent, Outcome } from "eventplug-sdk/assembly/testing";

const MASK = "[REDACTED]";

export function test(): void {
  // 1: a login: two top-level keys and a nested one.
  const login = handleEvent(getFixture(1));
  assertOutcome(login, Outcome.Modified, "a login is redacted");
  const event = login.event!;
  assertEqual(event.get("addr.remote")!.asString(), MASK, "addr.remote is masked");
  assertEqual(event.get("user_agent")!.asString(), MASK, "user_agent is masked");
  assertEqual(event.getAt(["mfa_device", "mfa_device_uuid"])!.asString(), MASK, "a nested path is masked");
  assertEqual(event.getAt(["mfa_device", "mfa_device_name"])!.asString(), "otp-device", "its siblings stay");
  assertEqual(event.get("user")!.asString(), "alice", "other fields stay");

  // 2: a session: a label inside server_labels.
  const session = handleEvent(getFixture(2));
  assertOutcome(session, Outcome.Modified, "a session start is redacted");
  assertEqual(session.event!.getAt(["server_labels", "team"])!.asString(), MASK, "server_labels.team is masked");
  assertEqual(session.event!.getAt(["server_labels", "env"])!.asString(), "prod", "other labels stay");
  assertTrue(!session.event!.has("user_agent"), "an absent field is not added");

  // 3: a database query has none of the fields.
  const query = getFixture(3);
  const forwarded = handleEvent(query);
  assertOutcome(forwarded, Outcome.Forwarded, "nothing to redact in a query");
  assertEqual(forwarded.output.trimEnd(), query.trimEnd(), "the query is unchanged");

  // 4: an event type without a typed view is redacted the same way.
  const git = handleEvent(getFixture(4));
  assertOutcome(git, Outcome.Modified, "any event type is redacted");
  assertEqual(git.event!.get("addr.remote")!.asString(), MASK, "addr.remote of git.command");
}
