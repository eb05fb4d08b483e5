// Tests of the modify plugin, run by `npm test` (eventplug test --build build/test.wasm).

export * from "./index";

import { assertEqual, assertOutcome, getFixture, handleEvent, Outcome } from "eventplug-sdk/assembly/testing";

export function test(): void {
  // 1: an access request that already has an annotation.
  const request = handleEvent(getFixture(1));
  assertOutcome(request, Outcome.Modified, "an access request is annotated");
  const annotations = request.event!.get("annotations")!;
  assertEqual(annotations.get("seen-by-us")!.asString(), "yes", "the seen-by-us annotation");
  assertEqual(annotations.get("ticket")!.asStringArray().join(","), "INC-4711", "the existing annotation stays");
  assertEqual(request.event!.get("state")!.asString(), "PENDING", "other fields stay");

  // 2: an access request without annotations gets the object.
  const bare = handleEvent(getFixture(2));
  assertOutcome(bare, Outcome.Modified, "an access request without annotations is annotated");
  assertEqual(bare.event!.getAt(["annotations", "seen-by-us"])!.asString(), "yes", "annotations created");

  // 3: other events pass untouched.
  const login = getFixture(3);
  const forwarded = handleEvent(login);
  assertOutcome(forwarded, Outcome.Forwarded, "a login is not an access request");
  assertEqual(forwarded.output.trimEnd(), login.trimEnd(), "the login is unchanged");
}
