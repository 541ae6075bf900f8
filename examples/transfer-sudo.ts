/**
 * Puts a config file where only root may write, as the deploy user, and reads it back: in-memory
 * text uploaded with sudo (mode and owner set, the old file replaced atomically), then downloaded
 * with sudo into memory and into a local file.
 *
 *   THREADBARE_SSHD_STATE=... node examples/transfer-sudo.ts
 */
import { Console, Effect } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Operations } from "../src/index.ts"
import * as Transfer from "../src/Transfer.ts"
import { exampleLayer } from "./example-server.ts"

const dir = "/tmp/threadbare-example-root"
const conf = `${dir}/app.conf`

const program = Effect.gen(function*() {
  // A directory only root can enter, like /etc/ssl/private. (Argument lists run without a
  // login shell, so root's profile does not get in the way.)
  const asRoot = (argv: ReadonlyArray<string>) => Operations.remoteSudo(argv, { useShell: false })
  yield* asRoot(["rm", "-rf", dir])
  yield* asRoot(["install", "-d", "-m", "700", dir])

  yield* Transfer.upload({ content: "listen = 8080\nworkers = 4\n" }, conf, { useSudo: true, mode: 0o640 })
  yield* asRoot(["stat", "-c", "%U %a %s", conf])

  // Without sudo the same read is refused, with the reason and the path.
  const refused = yield* Effect.flip(Transfer.download(conf))
  yield* Console.log(`without sudo: ${refused.message.split("\n")[0]}`)

  const bytes = yield* Transfer.download(conf, undefined, { useSudo: true })
  yield* Console.log(`read with sudo: ${JSON.stringify(new TextDecoder().decode(bytes))}`)

  const local = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "tb-example-")), "app.conf")
  yield* Transfer.download(conf, local, { useSudo: true })
  yield* Console.log(`saved to a local file: ${fs.readFileSync(local, "utf8").split("\n")[0]}`)

  yield* asRoot(["rm", "-rf", dir])
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
