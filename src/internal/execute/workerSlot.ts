/**
 * One worker process of an `Execute` pool and the RPC client that talks to it: a slot of the
 * pool. The protocol starts a new process in the slot after a crash; the slot remembers how the
 * last one ended, so the runs that were on it can say so in their `WorkerCrashed`.
 */
import * as NodeWorker from "@effect/platform-node/NodeWorker"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as RpcClient from "effect/rpc/RpcClient"
import type * as RpcClientError from "effect/rpc/RpcClientError"
import type * as Scope from "effect/Scope"
import * as ChildProcess from "node:child_process"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import * as Watchdog from "../local/processTree.ts"
import { WorkerRpcs } from "./workerProtocol.ts"

export interface Slot {
  readonly client: RpcClient.FromGroup<typeof WorkerRpcs, RpcClientError.RpcClientError>
  /** The slot's current worker process. */
  child: ChildProcess.ChildProcess | undefined
  /** Runs in flight on the slot's worker. */
  inFlight: number
  /** How the slot's last worker process ended, read when a run fails with the protocol. */
  ended:
    | { readonly code: number | null; readonly signal: string | null; readonly runsInFlight: number }
    | undefined
  /**
   * The check (and, if need be, the stop) of a worker whose runs were interrupted, shared by every
   * run interrupted on it meanwhile: one ping, one stop, however many runs it held.
   */
  stopping: { readonly child: ChildProcess.ChildProcess; readonly done: Effect.Effect<void> } | undefined
}

// The worker entry beside this module, in the same form: `.ts` when running from source (tsx,
// Node's type stripping, vitest), `.js` when compiled.
const workerEntry = (): string => {
  const here = fileURLToPath(import.meta.url)
  return path.join(path.dirname(here), `workerMain${path.extname(here)}`)
}

/** In the user's own cache directory, not a shared temp dir: compiled code found there is run. */
export const defaultCompileCache = (): string =>
  path.join(
    process.env["XDG_CACHE_HOME"] ?? path.join(os.homedir(), ".cache"),
    "effect-threadbare",
    "compile-cache"
  )

/**
 * One worker process with an RPC client of its own, taking up to `concurrency` runs at once.
 * The protocol fails every call in flight on a client when one of its workers dies, so a
 * client per process keeps a crash to the runs on that process.
 */
export const makeSlot = (
  execArgv: ReadonlyArray<string>,
  concurrency: number,
  compileCache: string
): Effect.Effect<Slot, never, Scope.Scope> =>
  Effect.gen(function*() {
    const state: Omit<Slot, "client"> = {
      child: undefined,
      inFlight: 0,
      ended: undefined,
      stopping: undefined
    }
    const spawn = () => {
      state.ended = undefined
      // The cache directory is the entry's only argument ("" for none).
      const child = ChildProcess.fork(workerEntry(), [compileCache], {
        execArgv: [...execArgv],
        // Workers never read the terminal (prompts are refused); their own stdout and stderr
        // (logs, stray console output) go where ours go.
        stdio: ["ignore", "inherit", "inherit", "ipc"]
      })
      // The worker notices its parent's death on its event loop, which a task looping on the
      // CPU never lets turn: a watchdog beside it stops it (and what it started) without it.
      const watchdog = child.pid === undefined ? undefined : Watchdog.watch(child.pid)
      // Registered before the worker platform's listener, so it is set when the failure arrives.
      child.once("exit", (code, signal) => {
        state.ended = { code, signal, runsInFlight: state.inFlight }
        watchdog?.kill("SIGTERM")
      })
      state.child = child
      return child
    }
    const protocol = yield* Layer.build(
      RpcClient.layerProtocolWorker({ size: 1, concurrency }).pipe(Layer.provide(NodeWorker.layer(spawn)))
    ).pipe(Effect.orDie)
    const client = yield* RpcClient.make(WorkerRpcs).pipe(Effect.provide(protocol))
    return Object.assign(state, { client })
  })
