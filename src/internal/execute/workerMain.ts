/**
 * The entry point of an `Execute` worker process (forked by `Execute`, never imported).
 *
 * It turns on Node's compile cache before anything heavy loads, then imports the worker itself
 * (`workerServer`): effect, the RPC server, ssh2 and the library are compiled once and read
 * back from the cache by every later worker, which roughly halves the CPU a worker needs to
 * start. `Execute` passes the cache directory as the first argument, or an empty string for
 * no cache. A failure to enable the cache (read-only disk) only costs that speed.
 *
 * Kept tiny and free of static imports of the library on purpose: modules imported statically
 * here would be loaded before the cache is on.
 */
import * as Module from "node:module"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

// Once the parent is gone (killed, or it exited without closing us), what the worker still
// sends it (a stopped run's outcome, an output line, the ready message of a worker still
// starting) fails, emitted on `process`: with ERR_IPC_CHANNEL_CLOSED once the worker has read
// that the channel is closed, and with EPIPE (or ECONNRESET) when it writes before reading it.
// Nobody is left to read it, and unhandled it would end the worker with a trace before its
// tasks' finalizers have stopped their remote commands; `workerServer` stops the tasks on
// `disconnect`, which follows.
process.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "ERR_IPC_CHANNEL_CLOSED" || error.code === "EPIPE" || error.code === "ECONNRESET") return
  console.error("effect-threadbare: the worker process failed:", error)
  process.exit(1)
})

const cacheDir = process.argv[2] ?? ""
if (cacheDir !== "") Module.enableCompileCache(cacheDir)

// `.ts` when running from source (tsx, Node's type stripping), `.js` once compiled.
const here = fileURLToPath(import.meta.url)
const server = new URL(`./workerServer${path.extname(here)}`, import.meta.url).href

import(server).catch((error: unknown) => {
  console.error("effect-threadbare: the worker process could not start:", error)
  process.exit(1)
})
