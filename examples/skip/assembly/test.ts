// Tests of the skip plugin, run by `npm test` (eventplug test --build build/test.wasm).

export * from "./index";

import { assertEqual, assertOutcome, getFixture, handleEvent, Outcome } from "eventplug-sdk/assembly/testing";

export function test(): void {
  assertOutcome(handleEvent(getFixture(1)), Outcome.Skipped, "secret-santa's login is dropped");

  const other = getFixture(2);
  const forwarded = handleEvent(other);
  assertOutcome(forwarded, Outcome.Forwarded, "alice's login goes on");
  assertEqual(forwarded.output.trimEnd(), other.trimEnd(), "alice's login is unchanged");

  assertOutcome(handleEvent(getFixture(3)), Outcome.Forwarded, "secret-santa's session is not a login");
}
