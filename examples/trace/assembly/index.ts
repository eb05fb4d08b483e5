// trace: logs the type and size of every event and forwards it unchanged.

import { Event, HandleEventBase, log, registerHandler } from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

class Trace extends HandleEventBase {
  any(event: Event): void {
    log.info(event.type + " (" + event.byteLength.toString() + " bytes)");
  }
}

registerHandler(new Trace());
