// Tests of the count plugin, run by `npm test` (eventplug test --build build/test.wasm).
// Fixtures 1-5: failed logins of mallory within two minutes; 6: a successful login of alice.

export * from "./index";

import {
  ApiRequestKind,
  assertEqual,
  assertOutcome,
  assertTrue,
  getAPIRequests,
  getFixture,
  getLatestAPIRequest,
  handleEvent,
  Outcome,
} from "eventplug-sdk/assembly/testing";

export function test(): void {
  // Three failures and a success: no lock yet.
  for (let id = 1; id <= 3; id++) assertOutcome(handleEvent(getFixture(id)), Outcome.Forwarded, "a failed login is forwarded");
  assertOutcome(handleEvent(getFixture(6)), Outcome.Forwarded, "a successful login is forwarded");
  assertTrue(getLatestAPIRequest() === null, "no lock after 3 failed logins");

  // The fourth failure locks mallory for an hour.
  assertOutcome(handleEvent(getFixture(4)), Outcome.Forwarded, "the 4th failed login is forwarded too");
  const request = getLatestAPIRequest();
  assertTrue(request !== null, "a lock after 4 failed logins");
  assertEqual(request!.kind, ApiRequestKind.CreateLock, "the request creates a lock");
  const lock = request!.createLock!;
  assertEqual(lock.target!.user, "mallory", "the lock targets the user");
  assertEqual(lock.message, "User is locked due to too many failed login attempts", "the lock message");
  assertEqual(lock.ttlSeconds, <i64>3600, "the lock lasts an hour");

  // Counting starts over after the lock.
  assertOutcome(handleEvent(getFixture(5)), Outcome.Forwarded, "a 5th failed login");
  assertEqual(getAPIRequests().length, 1, "one lock, not one per failure");
}
