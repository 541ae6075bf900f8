/**
 * Everything a deploy program needs, in one layer, and a `runMain` that runs a program with it.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Operations, Settings, Threadbare } from "effect-threadbare"
 *
 * Operations.remote("uptime").pipe(
 *   Settings.settings({ host: "deploy@web-1" }),
 *   Threadbare.runMain
 * )
 * ```
 *
 * @since 0.1.0
 * @module
 */
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import * as os from "node:os"
import { readableCause } from "./internal/execute/workerDefect.ts"
import * as Ssh from "./Ssh.ts"

/**
 * The services of the operations: Node's process spawner, file system and path
 * (`NodeServices`), and SSH connections (`Ssh.layer`), which stay open until the layer's scope
 * ends.
 *
 * @since 0.1.0
 */
export const layer: Layer.Layer<NodeServices.NodeServices | Ssh.SshConnections> = Layer.mergeAll(
  NodeServices.layer,
  Ssh.layer
)

// The signals that stop a deploy program: Ctrl-C, `kill`, and the terminal closing (SIGHUP).
const stopSignals = ["SIGINT", "SIGTERM", "SIGHUP"] as const

const runMainNode = Runtime.makeRunMain(({ fiber, teardown }) => {
  let received: (typeof stopSignals)[number] | undefined
  const onSignal = (signal: (typeof stopSignals)[number]) => {
    if (signal === "SIGHUP") {
      // The terminal is gone: a write to it fails (EIO, EPIPE), and an unhandled write error
      // would end the process before its finalizers have stopped remote commands.
      for (const stream of [process.stdout, process.stderr]) stream.on("error", () => {})
    }
    received ??= signal
    fiber.interruptUnsafe(fiber.id)
  }
  for (const signal of stopSignals) process.on(signal, onSignal)
  fiber.addObserver((exit) => {
    for (const signal of stopSignals) process.removeListener(signal, onSignal)
    teardown(exit, (code) => {
      if (received === undefined && code === 0) return
      // Stopped by a signal and nothing else went wrong: the shell's convention, 128 + its number.
      const stopped = received !== undefined && Exit.isFailure(exit) && Cause.hasInterruptsOnly(exit.cause)
      process.exit(stopped ? 128 + os.constants.signals[received!] : code)
    })
  })
})

/**
 * Runs a deploy program as the main program of the process, with {@link layer}.
 *
 * - SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) interrupt it: finalizers run, so
 *   local and remote commands are stopped and temporary files removed, then the process exits
 *   with 128 + the signal's number (130, 143, 129). A second signal changes nothing: the
 *   cleanup goes on.
 * - A failure is reported (a defect holding a cycle too, the cycle marked) and the process
 *   exits with code 1.
 *
 * @example
 * ```ts
 * Operations.remote("uptime").pipe(Settings.settings({ host: "web-1" }), Threadbare.runMain)
 * ```
 *
 * @since 0.1.0
 */
export const runMain = <A, E>(
  program: Effect.Effect<A, E, NodeServices.NodeServices | Ssh.SshConnections>
): void =>
  runMainNode(
    program.pipe(
      Effect.provide(layer),
      Effect.tapCause((cause) =>
        Cause.hasInterruptsOnly(cause) || !Runtime.getErrorReported(Cause.squash(cause))
          ? Effect.void
          : Effect.logError(readableCause(cause, true))
      )
    ),
    { disableErrorReporting: true }
  )
