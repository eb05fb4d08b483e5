// Tests of the alert plugin, run by `npm test` (eventplug test --build build/test.wasm).

export * from "./index";

import { Severity } from "eventplug-sdk/assembly";
import { assertEqual, assertOutcome, assertTrue, getAlerts, getFixture, handleEvent, Outcome } from "eventplug-sdk/assembly/testing";

export function test(): void {
  // 1-3: a role created, updated and deleted.
  const changes = ["created", "updated", "deleted"];
  for (let id = 1; id <= 3; id++) {
    assertOutcome(handleEvent(getFixture(id)), Outcome.Forwarded, "a role change is forwarded unchanged");
    const alerts = getAlerts();
    assertEqual(alerts.length, id, "one alert per role change");
    const raised = alerts[id - 1];
    assertEqual(raised.message, "role break-glass " + changes[id - 1] + " by alice", "role alert message");
    assertEqual(raised.severity, Severity.WARNING, "role alert severity");
    assertTrue(raised.includeEvent, "the role alert carries the event");
    assertEqual(raised.metadata.get("role"), "break-glass", "role alert metadata");
  }

  // 4: a session started as root.
  handleEvent(getFixture(4));
  const alerts = getAlerts();
  assertEqual(alerts.length, 4, "a session as root raises an alert");
  assertEqual(alerts[3].message, "alice started a session as root on ip-10-1-2-3", "root session alert message");
  assertEqual(alerts[3].severity, Severity.CRITICAL, "root session alert severity");

  // 5: a login as root.
  handleEvent(getFixture(5));
  assertEqual(getAlerts().length, 5, "a login as root raises an alert");
  assertEqual(getAlerts()[4].message, "alice logged in as root", "root login alert message");

  // 6-7: a session as ubuntu and a login without a login name: no alert.
  handleEvent(getFixture(6));
  handleEvent(getFixture(7));
  assertEqual(getAlerts().length, 5, "no alert for other logins");
}
