/**
 * Synchronises a local directory to the server and back with the system rsync over ssh, using
 * the same connection settings as everything else; then shows an rsync failure explained.
 *
 *   THREADBARE_SSHD_STATE=... node examples/transfer-rsync.ts
 */
import { NodeServices } from "@effect/platform-node"
import { Console, Effect, Layer } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Operations } from "../src/index.ts"
import * as Transfer from "../src/Transfer.ts"
import { exampleLayer } from "./example-server.ts"

const remote = "/tmp/threadbare-example-rsync/releases/current/"

const program = Effect.gen(function*() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tb-example-"))
  const build = path.join(work, "build")
  fs.mkdirSync(path.join(build, "assets"), { recursive: true })
  fs.writeFileSync(path.join(build, "app.js"), "console.log('v2')\n")
  fs.writeFileSync(path.join(build, "assets", "logo.svg"), "<svg/>\n")

  // The trailing slash sends the directory's contents; missing remote directories are made.
  yield* Transfer.rsyncUpload(`${build}/`, remote, { delete: true })
  yield* Operations.remote(`find ${remote} -type f | sort`)

  yield* Transfer.rsyncDownload(remote, path.join(work, "mirror") + "/")
  yield* Console.log(`mirrored: ${fs.readdirSync(path.join(work, "mirror")).sort().join(", ")}`)

  const failed = yield* Effect.flip(
    Transfer.rsyncDownload("/tmp/threadbare-example-rsync/missing/", work + "/")
  )
  yield* Console.log(failed.message.split("\n")[0])
  yield* Operations.remote("rm -rf /tmp/threadbare-example-rsync")
  fs.rmSync(work, { recursive: true })
})

Effect.runPromise(program.pipe(Effect.provide(Layer.merge(exampleLayer, NodeServices.layer))))
