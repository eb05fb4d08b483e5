// Tests of the trace plugin, run by `npm test` (eventplug test --build build/test.wasm).

export * from "./index";

import { assertEqual, assertOutcome, getFixture, handleEvent, Outcome } from "eventplug-sdk/assembly/testing";

export function test(): void {
  for (let id = 1; id <= 2; id++) {
    const fixture = getFixture(id);
    const result = handleEvent(fixture);
    assertOutcome(result, Outcome.Forwarded, "fixture " + id.toString() + " is forwarded");
    assertEqual(result.output.trimEnd(), fixture.trimEnd(), "fixture " + id.toString() + " is unchanged");
  }
}
