// skip: drops the `user.login` events of the user `secret-santa`; every other event goes on unchanged.

import { HandleEventBase, registerHandler, UserLogin } from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

const HIDDEN_USER = "secret-santa";

class Skip extends HandleEventBase {
  userLogin(event: UserLogin): void {
    if (event.user == HIDDEN_USER) this.skip();
  }
}

registerHandler(new Skip());
