// modify: adds the annotation `seen-by-us: yes` to every new access request, keeping the request's
// other annotations and every other field as they arrived.

import { AccessRequestCreate, HandleEventBase, jsonString, registerHandler } from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

class Modify extends HandleEventBase {
  accessRequestCreate(event: AccessRequestCreate): void {
    // The path creates `annotations` when the request has none.
    event.setJsonAt(["annotations", "seen-by-us"], jsonString("yes"));
  }
}

registerHandler(new Modify());
