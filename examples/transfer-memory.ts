/**
 * Uploads from memory and downloads into memory, no local files involved: text, bytes, and an
 * upload refused because the file exists and `overwrite` is off.
 *
 *   THREADBARE_SSHD_STATE=... node examples/transfer-memory.ts
 */
import { Console, Effect } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { Operations } from "../src/index.ts"
import * as Transfer from "../src/Transfer.ts"
import { exampleLayer } from "./example-server.ts"

const dir = "/tmp/threadbare-example-memory"
const sha = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex").slice(0, 16)

const program = Effect.gen(function*() {
  yield* Operations.remote(`rm -rf ${dir}`)
  // Missing parent directories are created.
  const written = yield* Transfer.upload({ content: "release=v42\n" }, `${dir}/release/VERSION`)
  yield* Operations.remote(`cat ${written}`)

  const bytes = randomBytes(1 << 20)
  yield* Transfer.upload(bytes, `${dir}/blob.bin`)
  const back = yield* Transfer.download(`${dir}/blob.bin`)
  yield* Console.log(`1 MiB round trip identical: ${sha(back) === sha(bytes)}`)

  const refused = yield* Effect.flip(Transfer.upload({ content: "other" }, written, { overwrite: false }))
  yield* Console.log(`refused: ${refused._tag} (${refused._tag === "TransferError" ? refused.reason : ""})`)
  yield* Operations.remote(`rm -rf ${dir}`)
})

Effect.runPromise(program.pipe(Effect.provide(exampleLayer)))
