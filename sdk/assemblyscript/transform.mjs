// An asc transform, named in asconfig.json, that writes the `eventplug.sdk` custom section
// ("eventplug-sdk <version>") into every module built with the SDK, so that `eventplug push` and
// `eventplug inspect` can name the SDK a plugin was built with.
import { readFileSync } from "node:fs";

const sdk = JSON.parse(readFileSync(new URL("./package.json", import.meta.url), "utf8"));

export default class EventplugSdkSection {
  afterCompile(module) {
    module.addCustomSection("eventplug.sdk", new TextEncoder().encode(`${sdk.name} ${sdk.version}`));
  }
}
