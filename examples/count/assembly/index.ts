// count: more than 3 failed logins of one user within 5 minutes lock that user for an hour.
//
// Each failed `user.login` takes a token in the user's scope that lives 5 minutes; the token store
// answers how many are alive, across instances and restarts. On the 4th the plugin declares a
// Teleport lock and releases the scope, so counting starts over.

import { api, HandleEventBase, LockTarget, log, registerHandler, store, UserLogin } from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

/** Failed logins allowed within the window. */
const MAX_FAILED_LOGINS = 3;
/** The window, in seconds. */
const WINDOW_SECONDS = 5 * 60;
/** How long the lock lasts, in seconds. */
const LOCK_SECONDS: i64 = 60 * 60;
const LOCK_MESSAGE = "User is locked due to too many failed login attempts";

class Count extends HandleEventBase {
  userLogin(event: UserLogin): void {
    const user = event.user;
    // Failed SSO logins may not name a user: there is nobody to lock.
    if (event.status.success || user.length == 0) return;

    const failures = store.takeToken(user, WINDOW_SECONDS);
    if (failures < 0) {
      log.warn("count: the token store refused the scope of user " + user + " (" + failures.toString() + ")");
      return;
    }
    if (failures <= MAX_FAILED_LOGINS) return;

    const target = new LockTarget();
    target.user = user;
    api.createLock(target, LOCK_MESSAGE, LOCK_SECONDS);
    store.releaseTokens(user);
    log.warn("count: " + failures.toString() + " failed logins of " + user + " within 5 minutes: locking for an hour");
  }
}

registerHandler(new Count());
