/**
 * Uploads a local directory tree (one tar stream, modes kept, replaced atomically on the server)
 * and downloads it back into a local directory, with progress reported through `onProgress`.
 *
 *   THREADBARE_SSHD_STATE=... node examples/transfer-directory.ts
 */
import { Console, Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Operations } from "../src/index.ts"
import * as Transfer from "../src/Transfer.ts"
import { exampleLayer } from "./example-server.ts"

const remote = "/tmp/threadbare-example-site"

const program = Effect.gen(function*() {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "tb-example-"))
  const site = path.join(work, "site")
  fs.mkdirSync(path.join(site, "bin"), { recursive: true })
  fs.writeFileSync(path.join(site, "index.html"), "<h1>hello</h1>\n")
  fs.writeFileSync(path.join(site, "bin", "start"), "#!/bin/sh\necho started\n", { mode: 0o755 })
  for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(site, `page-${i}.html`), `<p>${i}</p>\n`)

  yield* Operations.remote(`rm -rf ${remote}`)
  let reports = 0
  yield* Transfer.upload(site, remote, { onProgress: () => Effect.sync(() => void reports++) })
  yield* Operations.remote(`${remote}/bin/start && ls ${remote} | wc -l`)

  const back = yield* Transfer.download(remote, path.join(work, "copy"))
  yield* Console.log(
    `downloaded ${fs.readdirSync(back).length} entries to ${path.basename(back)}/, ` +
      `bin/start mode ${(fs.statSync(path.join(back, "bin", "start")).mode & 0o777).toString(8)}, ` +
      `${reports} progress report(s)`
  )
  yield* Operations.remote(`rm -rf ${remote}`)
  fs.rmSync(work, { recursive: true })
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
