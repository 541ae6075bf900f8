/**
 * The tasks behind `threadbare -- COMMAND`, `threadbare put` and `threadbare get`: declared like
 * any user's task, so the ad-hoc forms share the runs, events, report and summary of
 * `threadbare run`.
 */
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { OperationError } from "../../Errors.ts"
import * as Operations from "../../Operations.ts"
import { Settings } from "../../Settings.ts"
import * as Task from "../../Task.ts"
import * as Transfer from "../../Transfer.ts"

/** Runs one shell command on the host (with sudo when the settings say so). */
export const command = Task.make({
  name: "threadbare/command",
  module: import.meta.url,
  input: Schema.Struct({ command: Schema.String }),
  error: OperationError
}, ({ command }) => Effect.asVoid(Operations.remote(command)))

/** Uploads a local file or directory to the host. */
export const put = Task.make({
  name: "threadbare/put",
  module: import.meta.url,
  input: Schema.Struct({ local: Schema.String, remote: Schema.String }),
  success: Schema.String,
  error: OperationError
}, ({ local, remote }) => Transfer.upload(local, remote))

/** `{host}` in a local path, replaced by each host's name, so that several hosts never share a file. */
export const hostPlaceholder = "{host}"

/** Downloads a remote file to a local path, `{host}` replaced by the host's name. */
export const get = Task.make({
  name: "threadbare/get",
  module: import.meta.url,
  input: Schema.Struct({ remote: Schema.String, local: Schema.String }),
  success: Schema.String,
  error: OperationError
}, ({ local, remote }) =>
  Effect.gen(function*() {
    const host = (yield* Settings).host ?? "local"
    return yield* Transfer.download(remote, local.replaceAll(hostPlaceholder, host))
  }))
