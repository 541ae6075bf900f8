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
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as NodeServices from "@effect/platform-node/NodeServices"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
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

/**
 * Runs a deploy program as the main program of the process, with {@link layer}: Ctrl-C
 * interrupts it (stopping remote commands too), a failure is reported and sets the exit code.
 *
 * @since 0.1.0
 */
export const runMain = <A, E>(
  program: Effect.Effect<A, E, NodeServices.NodeServices | Ssh.SshConnections>
): void => NodeRuntime.runMain(program.pipe(Effect.provide(layer)))
