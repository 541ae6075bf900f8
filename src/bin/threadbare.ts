#!/usr/bin/env node
/**
 * The `threadbare` command: see `threadbare --help`, and the README's "Command line".
 *
 * @since 0.2.0
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as ExitCodes from "../internal/cli/exitCodes.ts"
import { main } from "../internal/cli/main.ts"
import * as Threadbare from "../Threadbare.ts"

// The version printed by --version: the package's own, read once at start.
const version = Effect.tryPromise(() =>
  import(new URL("../../package.json", import.meta.url).href, { with: { type: "json" } }) as Promise<
    { readonly default: { readonly version: string } }
  >
).pipe(Effect.map((pkg) => pkg.default.version), Effect.orElseSucceed(() => "0.0.0"))

// A reader that goes away (`threadbare ... | head`) must not end the process with an unhandled
// EPIPE before its finalizers have stopped the remote commands: the rest of the output is dropped.
process.stdout.on("error", () => {})

// ...but nobody reads what the remote commands still print, and a command that never ends would
// keep the run going for good: the run is interrupted as by Ctrl-C, which stops them.
const readerGone = Effect.callback<never>((resume) => {
  const onError = (error: NodeJS.ErrnoException) => {
    if (error.code === "EPIPE") resume(Effect.interrupt)
  }
  process.stdout.on("error", onError)
  return Effect.sync(() => process.stdout.off("error", onError))
})

NodeRuntime.runMain(
  Effect.flatMap(version, main).pipe(
    Effect.provide(Layer.fresh(Threadbare.layer)),
    Effect.raceFirst(readerGone)
  ),
  {
    disableErrorReporting: true,
    teardown: (exit, onExit) =>
      onExit(
        Exit.isSuccess(exit)
          ? (exit.value as number)
          : Exit.hasInterrupts(exit)
          ? ExitCodes.interrupted
          : ExitCodes.other
      )
  }
)
